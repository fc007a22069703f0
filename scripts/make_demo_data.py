"""The demo corpus behind `make train`: real text already on this machine, as packed MDS shards.

    python scripts/make_demo_data.py data/tiny [--max-seq-len 128]

Two sources, so the run shows a data mix: `python_stdlib` (the top-level modules of this Python's
standard library: code) and `licenses` (Debian's /usr/share/common-licenses: legal prose). The output
folder stands in for the object store: yamls/tiny.yaml streams from it as its `remote`.
"""
import argparse
import sys
import sysconfig
from pathlib import Path


def demo_sources() -> dict[str, list[str]]:
    from llmtrain.errors import UserError

    stdlib = sorted(str(p) for p in Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    licenses = sorted(str(p) for p in Path("/usr/share/common-licenses").glob("*") if p.is_file())
    sources = {"python_stdlib": stdlib, "licenses": licenses}
    for name, files in sources.items():
        if not files:
            raise UserError(f"demo source '{name}': no files found on this machine; "
                            "pass your own text to scripts/data_prep.py instead")
    return sources


def main(argv: list[str]) -> None:
    from llmtrain.data.prep import prepare

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder to write one sub-folder of shards per source into")
    parser.add_argument("--max-seq-len", type=int, default=128)
    parser.add_argument("--tokenizer", default="EleutherAI/gpt-neox-20b")
    args = parser.parse_args(argv)
    for name, files in demo_sources().items():
        summary = prepare(files, f"{args.out}/{name}", args.tokenizer, args.max_seq_len, workers=2, overwrite=True)
        print("\n".join(summary.lines()), flush=True)


if __name__ == "__main__":  # imports inside: tokenizer worker processes re-import this file
    from llmtrain.cli import run_cli

    run_cli(main, sys.argv[1:])
