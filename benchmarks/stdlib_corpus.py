"""Real text anywhere Python runs: every .py file of this interpreter's standard library as one jsonl.

    python benchmarks/stdlib_corpus.py OUT.jsonl      # then scripts/data_prep.py OUT.jsonl --out ...

For runs on machines with no data and no network (the GPU machine): real tokens, not random ones.
"""
import json
import sys
import sysconfig
from pathlib import Path


def main(out: str) -> None:
    documents = 0
    with open(out, "w") as f:
        for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
            if "site-packages" in path.parts or "dist-packages" in path.parts:
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            if text.strip():
                f.write(json.dumps({"text": text}) + "\n")
                documents += 1
    print(f"{out}: {documents} documents")


if __name__ == "__main__":
    main(sys.argv[1])
