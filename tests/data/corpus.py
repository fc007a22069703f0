"""Small, varied raw corpora for the data tests (deterministic for a given seed)."""
from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import cramjam

_WORDS = ("the of and to in is was for on with as by at from that this data model token train "
          "Ünïcödé naïve café 日本語 テキスト 🙂 émoji — don't isn't I'm , . ; : ! ? ( ) [ ] { } "
          "def return x ** 2 # + - = <|endoftext|> \t").split(" ")


def make_documents(n: int, seed: int = 0, min_words: int = 3, max_words: int = 120) -> list[str]:
    """Documents with unicode, code-like text, runs of spaces/newlines and literal '<|endoftext|>'."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(min_words, max_words))]
        seps = [rng.choice([" ", " ", " ", "  ", "\n", "\n\n", "\t"]) for _ in words]
        docs.append(f"doc{seed}.{i}: " + "".join(w + s for w, s in zip(words, seps)).strip())
    return docs


def write_corpus(root: Path, docs: list[str]) -> list[str]:
    """Spread `docs` over .txt, .txt.gz, .jsonl, .jsonl.gz and .jsonl.zst files in nested folders.

    Returns the documents in the order data prep reads them (files sorted by path)."""
    root.mkdir(parents=True, exist_ok=True)
    files: dict[Path, list[str]] = {}
    kinds = ["a.jsonl", "b/c.jsonl.gz", "b/d.txt", "b/e/f.jsonl.zst", "g.txt.gz", "h.json"]
    for i, doc in enumerate(docs):
        kind = kinds[i % len(kinds)]
        if kind.endswith((".txt", ".txt.gz")):  # one document per text file
            kind = kind.replace(".txt", f"{i:05}.txt")
        files.setdefault(root / kind, []).append(doc)
    for path, contents in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if ".txt" in path.name:
            data = contents[0].encode()
        else:
            data = "".join(json.dumps({"text": d, "id": k}) + "\n" * (1 + k % 2) for k, d in enumerate(contents)).encode()
        if path.name.endswith(".gz"):
            data = gzip.compress(data)
        elif path.name.endswith(".zst"):
            data = bytes(cramjam.zstd.compress(data))
        path.write_bytes(data)
    return [d for path in sorted(files) for d in files[path]]


def write_stream_shards(root: Path, names: list[str], max_seq_len: int, docs_per_stream: int) -> Path:
    """One folder of packed MDS shards per stream name under `root` (stream i from seed i), as
    `scripts/data_prep.py` writes them with the real gpt-neox tokenizer."""
    from llmtrain.data.prep import prepare
    from llmtrain.data.tokenizer import NEOX_NAME, install_tokenizers

    install_tokenizers()
    for seed, name in enumerate(names):
        raw = root / "raw" / name
        raw.mkdir(parents=True)
        for i, doc in enumerate(make_documents(docs_per_stream, seed=seed)):
            (raw / f"{i:03}.txt").write_text(doc)
        prepare([str(raw)], str(root / name), NEOX_NAME, max_seq_len)
    return root
