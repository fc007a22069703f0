"""Tokenize documents into packed MDS shards: see `python scripts/data_prep.py --help`.

    python scripts/data_prep.py data/raw/ --out data/mds/train --tokenizer EleutherAI/gpt-neox-20b \\
        --max-seq-len 2048 --workers 8 --compression zstd
"""
import sys

if __name__ == "__main__":  # imports inside: tokenizer worker processes re-import this file
    from llmtrain.cli import run_cli
    from llmtrain.data.prep import main

    run_cli(main, sys.argv[1:])
