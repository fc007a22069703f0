"""scripts/data_prep.py never imports torch (nor transformers, streaming, composer): on this CUDA build of
torch its shared libraries alone are ~0.9 GB of RSS, which would put data prep over its 1 GB budget."""
import os
import subprocess
import sys
from pathlib import Path

from llmtrain.data.tokenizer import NEOX_NAME

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "streaming", "composer")

CHECK = f"""
import sys
HEAVY = {HEAVY!r}

def heavy():
    return sorted({{name.split(".")[0] for name in sys.modules}} & set(HEAVY))

import llmtrain.data.prep as prep
assert not heavy(), ("import", heavy())
tokenizer = prep.load_tokenizer_file({NEOX_NAME!r}, key="--tokenizer")
assert not heavy(), ("tokenizer", heavy())
writer = prep._open_writer(sys.argv[2], prep._check_out(sys.argv[2]), prep._token_dtype(tokenizer.vocab_size), 4,
                           "zstd", "64mb", False)
assert not heavy(), ("writer", heavy())
writer.sink.abort()
prep.main([sys.argv[1], "--out", sys.argv[2], "--tokenizer", {NEOX_NAME!r}, "--max-seq-len", "4",
           "--workers", "2", "--compression", "zstd"])
assert not heavy(), ("prepare", heavy())
print("clean")
"""


def run_check(raw: Path, out: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHECK, str(raw), out], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)


def test_data_prep_does_not_import_torch(tmp_path, neox_dir):
    (tmp_path / "a.jsonl").write_text('{"text": "one two three four five six seven eight nine ten"}\n' * 20)
    done = run_check(tmp_path / "a.jsonl", str(tmp_path / "out"))
    assert done.returncode == 0 and done.stdout.splitlines()[-1] == "clean", done.stderr
    assert (tmp_path / "out" / "index.json").is_file()


def test_data_prep_to_s3_does_not_import_torch(tmp_path, neox_dir, s3_server):
    (tmp_path / "a.jsonl").write_text('{"text": "one two three four five six seven eight nine ten"}\n' * 20)
    bucket = s3_server.make_bucket()
    done = run_check(tmp_path / "a.jsonl", f"s3://{bucket}/data")
    assert done.returncode == 0 and done.stdout.splitlines()[-1] == "clean", done.stderr
    assert {"data/index.json", "data/manifest.json"} <= set(s3_server.keys(bucket, "data"))


def test_the_script_does_not_import_torch(tmp_path, neox_dir):
    """The script itself, as users run it: `-X importtime` lists every module it imported."""
    (tmp_path / "a.txt").write_text("one two three four five six seven eight nine ten")
    done = subprocess.run([sys.executable, "-X", "importtime", str(REPO / "scripts/data_prep.py"),
                           str(tmp_path / "a.txt"), "--out", str(tmp_path / "out"), "--tokenizer", NEOX_NAME,
                           "--max-seq-len", "4"], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    imported = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines()
                if line.startswith("import time:")}
    assert "numpy" in imported and "tokenizers" in imported  # the check sees real imports
    assert not imported & set(HEAVY)
