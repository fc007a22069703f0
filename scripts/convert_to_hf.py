"""Export a training checkpoint as a Hugging Face folder that stock transformers loads:

    python scripts/convert_to_hf.py CHECKPOINT OUT_DIR [--dtype bf16] [--config runs/NAME/config.yaml]

CHECKPOINT: a sharded checkpoint folder (ep0-ba100/), a full file (ep0-ba100-rank0.pt) or a save
folder's latest-rank0.pt; a local path or s3://bucket/... . Nothing in the checkpoint is executed:
it is read with a restricted unpickler and torch.load(weights_only=True); weights are written as
safetensors."""
import argparse
import sys

from llmtrain.cli import run_cli

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def main(argv: list[str]) -> None:
    import torch

    from llmtrain.hf_export import convert_to_hf

    parser = argparse.ArgumentParser(prog="scripts/convert_to_hf.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="checkpoint folder, .pt file or latest-rank0.pt; local or s3://")
    parser.add_argument("out_dir", help="the Hugging Face folder to write")
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="cast the weights (default: as trained)")
    parser.add_argument("--config", help="a run's config.yaml, for checkpoints that do not record their model")
    parser.add_argument("--no-tokenizer", action="store_true", help="write the model only")
    args = parser.parse_args(argv)
    out = convert_to_hf(args.checkpoint, args.out_dir, config=args.config,
                        dtype=getattr(torch, DTYPES[args.dtype]) if args.dtype else None,
                        tokenizer=not args.no_tokenizer)
    print(f"wrote {out}: load it with transformers.MptForCausalLM.from_pretrained('{out}')")


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
