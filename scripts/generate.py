"""Sample text from a trained model through a Hugging Face `text-generation` pipeline.

    python scripts/generate.py MODEL --prompt "def fibonacci(n):" [--max-new-tokens 64] [--temperature 0.8] [--seed 0]

MODEL is either
  - a Hugging Face folder written by `export_hf` or scripts/convert_to_hf.py (config.json +
    model.safetensors), loaded as stock `transformers.MptForCausalLM`; or
  - a Composer checkpoint: a full `.pt` file, a sharded checkpoint folder, a save folder (its
    `latest-rank0.pt`) or a run directory (its checkpoints/), local or s3://. It is converted to a
    temporary folder first by `llmtrain.hf_export.convert_to_hf` (scripts/convert_to_hf.py), with the
    model and tokenizer sections of --config, else of the run's config.yaml beside or above the
    checkpoint, else those the checkpoint records.
The tokenizer is --tokenizer, else the folder's own, else EleutherAI/gpt-neox-20b (installed locally;
nothing is fetched).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's llmtrain, not an installed one

from llmtrain.cli import run_cli  # noqa: E402
from llmtrain.errors import UserError  # noqa: E402


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/generate.py", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="exported Hugging Face folder, or a Composer checkpoint (.pt, folder, run dir)")
    p.add_argument("--prompt", action="append", required=True, help="text to continue; repeat for several")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.8, help="0: greedy decoding")
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", help="the run's config.yaml, for a checkpoint (default: found beside it)")
    p.add_argument("--tokenizer", help="tokenizer name or folder (default: the model folder's own)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when there is a GPU)")
    args = p.parse_args(argv)
    if args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens: {args.max_new_tokens} must be at least 1")
    if args.temperature < 0:
        raise UserError(f"--temperature: {args.temperature} must be >= 0 (0 means greedy)")
    return args


def generate(args: argparse.Namespace) -> list[str]:
    import torch
    import transformers

    from llmtrain.hf_export import convert_to_hf
    from llmtrain.data.tokenizer import NEOX_NAME, build_tokenizer
    from llmtrain.models.sources import checkpoint_of, run_config_of

    with tempfile.TemporaryDirectory(prefix="llmtrain-generate-") as tmp:
        local = Path(args.model)
        remote = args.model.startswith("s3://")
        if not remote and not local.exists():
            raise UserError(f"MODEL: '{local}' does not exist; pass an exported folder or a checkpoint")
        if (local / "config.json").is_file():
            folder = local
        else:  # a checkpoint; convert_to_hf says what is wrong with anything else
            checkpoint = args.model if remote else str(checkpoint_of(local))
            config = args.config or (None if remote else run_config_of(Path(checkpoint)))
            folder = convert_to_hf(checkpoint, Path(tmp) / "hf", config=str(config) if config else None)
        if args.tokenizer or not (folder / "tokenizer.json").is_file():
            tokenizer = build_tokenizer(args.tokenizer or NEOX_NAME, key="--tokenizer")
        else:
            tokenizer = None  # the pipeline loads the folder's own
        transformers.logging.set_verbosity_error()  # stdout/stderr keep the text and real errors only
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
