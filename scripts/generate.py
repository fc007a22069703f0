"""Sample text from a trained model through a Hugging Face `text-generation` pipeline.

    python scripts/generate.py MODEL --prompt "def fibonacci(n):" [--max-new-tokens 64] [--temperature 0.8] [--seed 0]

MODEL is either
  - a Hugging Face folder written by `export_hf` (config.json + model.safetensors), loaded as stock
    `transformers.MptForCausalLM`; or
  - a Composer checkpoint file (`runs/NAME/checkpoints/ep0-ba150-rank0.pt`, or `latest-rank0.pt`),
    or the folder holding them: it is exported to a temporary folder first, with the model section of
    the run's config.yaml (found next to the checkpoints folder, or given with --config).
The tokenizer is the folder's own when it has one, else --tokenizer, else the run's `tokenizer.name`,
else EleutherAI/gpt-neox-20b (installed locally; nothing is fetched). A sharded checkpoint folder is
converted with scripts/convert_to_hf.py first.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's llmtrain, not an installed one

from llmtrain.cli import run_cli  # noqa: E402
from llmtrain.errors import UserError  # noqa: E402

CHECKPOINT_NAMES = ("latest-rank0.pt",)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/generate.py", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="exported Hugging Face folder, or a Composer .pt checkpoint (or its folder)")
    p.add_argument("--prompt", action="append", required=True, help="text to continue; repeat for several")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.8, help="0: greedy decoding")
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", help="the run's config.yaml, for a checkpoint (default: found beside it)")
    p.add_argument("--tokenizer", help="tokenizer name or folder, when the model folder has none")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when there is a GPU)")
    args = p.parse_args(argv)
    if args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens: {args.max_new_tokens} must be at least 1")
    if args.temperature < 0:
        raise UserError(f"--temperature: {args.temperature} must be >= 0 (0 means greedy)")
    return args


def _find_checkpoint(path: Path) -> Path | None:
    """The .pt file behind MODEL, or None when MODEL is not a Composer checkpoint."""
    if path.is_file() and path.suffix == ".pt":
        return path
    if path.is_dir():
        for name in CHECKPOINT_NAMES:
            if (path / name).exists():
                return (path / name).resolve()
        if (path / "checkpoints").is_dir():  # a run directory
            return _find_checkpoint(path / "checkpoints")
    return None


def _find_run_config(checkpoint: Path, given: str | None) -> Path:
    if given:
        if not Path(given).is_file():
            raise UserError(f"--config: '{given}' is not a file; pass the run's config.yaml")
        return Path(given)
    # save_folder is usually RUN_DIR/checkpoints; look beside and above the checkpoint.
    for folder in (checkpoint.parent, checkpoint.parent.parent, checkpoint.parent.parent.parent):
        if (folder / "config.yaml").is_file():
            return folder / "config.yaml"
    raise UserError(f"{checkpoint}: no config.yaml beside it or in the folders above; "
                    f"pass the run's config with --config RUN_DIR/config.yaml")


def export_checkpoint(checkpoint: Path, config_path: Path, out_dir: Path) -> str:
    """Write `checkpoint` as a stock-MPT Hugging Face folder; returns the run's tokenizer name."""
    import torch
    from omegaconf import OmegaConf

    from llmtrain.models.mpt.configuration import MPTConfig
    from llmtrain.models.mpt.hf_interop import export_hf
    from llmtrain.models.mpt.modeling import MPTForCausalLM

    run = OmegaConf.to_container(OmegaConf.load(config_path), resolve=True)
    section = {k: v for k, v in (run.get("model") or {}).items() if k != "name"}
    if not section:
        raise UserError(f"{config_path}: no model: section; pass the config.yaml of the run that wrote {checkpoint}")
    # Built on the host with the portable attention: only the weights matter for the export.
    section["init_device"] = "cpu"
    section["attn_config"] = {**(section.get("attn_config") or {}), "attn_impl": "torch"}
    model = MPTForCausalLM(MPTConfig(**section))
    # A Composer checkpoint is a pickle of the whole training state; load only files you trust.
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    weights = state.get("state", {}).get("model") if isinstance(state, dict) else None
    if not weights:
        raise UserError(f"{checkpoint}: not a full Composer checkpoint (no state.model); a sharded "
                        f"checkpoint folder is converted with scripts/convert_to_hf.py")
    weights = {k.removeprefix("model."): v for k, v in weights.items()}  # ComposerMPT holds MPT as .model
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and model.config.tie_word_embeddings)]
    if missing or unexpected:
        raise UserError(f"{checkpoint}: its weights do not fit the model in {config_path} "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]}); pass the right --config")
    export_hf(model, out_dir)
    return (run.get("tokenizer") or {}).get("name") or ""


def _is_sharded_checkpoint(path: Path) -> bool:
    return path.is_dir() and ((path / ".metadata").exists() or any(path.glob("*.distcp")))


def generate(args: argparse.Namespace) -> list[str]:
    import torch
    import transformers

    from llmtrain.data.tokenizer import NEOX_NAME, build_tokenizer

    path = Path(args.model)
    if not path.exists():
        raise UserError(f"MODEL: '{path}' does not exist; pass an exported folder or a checkpoint .pt file")
    with tempfile.TemporaryDirectory(prefix="llmtrain-generate-") as tmp:
        tokenizer_name = args.tokenizer
        if (path / "config.json").is_file():
            folder = path
        elif (checkpoint := _find_checkpoint(path)) is not None:
            folder = Path(tmp)
            run_tokenizer = export_checkpoint(checkpoint, _find_run_config(checkpoint, args.config), folder)
            tokenizer_name = tokenizer_name or run_tokenizer
        elif _is_sharded_checkpoint(path):
            raise UserError(f"MODEL: '{path}' is a sharded checkpoint; convert it first with "
                            f"scripts/convert_to_hf.py and pass the folder it writes")
        else:
            raise UserError(f"MODEL: '{path}' has no config.json and no Composer checkpoint; pass a folder "
                            f"written by export_hf or a checkpoint .pt file")
        if tokenizer_name is None and (folder / "tokenizer.json").is_file():
            tokenizer = None  # the pipeline loads the folder's own
        else:
            tokenizer = build_tokenizer(tokenizer_name or NEOX_NAME, key="--tokenizer")
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        pipe = transformers.pipeline("text-generation", model=str(folder), tokenizer=tokenizer, device=device)
        eos = pipe.tokenizer.eos_token_id
        sampling = {"do_sample": True, "temperature": args.temperature, "top_k": args.top_k} \
            if args.temperature > 0 else {"do_sample": False}
        transformers.set_seed(args.seed)
        texts = []
        for prompt in args.prompt:
            out = pipe(prompt, max_new_tokens=args.max_new_tokens, pad_token_id=eos, **sampling)
            texts.append(out[0]["generated_text"])
        return texts


def main(argv: list[str]) -> None:
    texts = generate(parse_args(argv))
    for i, text in enumerate(texts):
        if i:
            print("-" * 40)
        print(text, flush=True)


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
