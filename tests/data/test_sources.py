"""The formats of the MPT-7B mix's sources round-trip through data prep: parquet with a `lang` column,
C4's json.gz, RedPajama's jsonl.zst, S2ORC's nested JSON and Hugging Face `datasets` folders (written by
pyarrow in save_to_disk's layout, and a real save_to_disk folder). The tokens are the kept documents
joined by EOS; a wrong field is one line naming the file and the fields it has."""
import gzip
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from llmtrain.data.prep import prepare
from llmtrain.data.tokenizer import NEOX_NAME
from llmtrain.errors import UserError
from tests.data.corpus import make_documents
from tests.data.test_prep import expected_stream, read_tokens

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures"
LANGS = ["Python", "Go", "Markdown"]
SEQ = 16


def _rows(docs: list[str]) -> list[dict]:
    return [{"content": d, "lang": LANGS[i % 3], "size": len(d)} for i, d in enumerate(docs)]


def write_parquet(root: Path, docs: list[str]) -> Path:
    """The Stack's layout: `content` and `lang` columns, several row groups."""
    path = root / "data-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(_rows(docs)), path, row_group_size=7)
    return path


def write_json_gz(root: Path, docs: list[str]) -> Path:
    """C4 / mC4's layout: JSON lines with text, timestamp and url, gzip-compressed."""
    path = root / "c4-train.00000-of-01024.json.gz"
    lines = [json.dumps({"text": d, "timestamp": "2019-04-25T12:57:54Z", "url": f"https://x/{i}"}) for i, d in enumerate(docs)]
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return path


def write_jsonl_zst(root: Path, docs: list[str]) -> Path:
    """RedPajama's layout: text with meta beside it, zstd-compressed as two frames (as `cat a.zst b.zst`)."""
    path = root / "en_head_0000.json.gz.dedup.classifier.jsonl.zst"
    half = len(docs) // 2
    frames = [zstandard.ZstdCompressor().compress("".join(
        json.dumps({"text": d, "meta": {"source": "cc", "n": i}}) + "\n" for i, d in enumerate(part)).encode())
        for part in (docs[:half], docs[half:])]
    path.write_bytes(b"".join(frames))
    return path


def write_s2orc(root: Path, docs: list[str]) -> Path:
    """S2ORC's layout: the paper text under content.text, annotations beside it."""
    path = root / "s2orc-0000.jsonl"
    path.write_text("".join(json.dumps({"corpusid": i, "content": {"text": d, "annotations": {"title": "[]"}}}) + "\n"
                            for i, d in enumerate(docs)))
    return path


def write_dataset_folder(root: Path, docs: list[str]) -> Path:
    """save_to_disk's layout written with pyarrow: arrow IPC stream files listed in state.json."""
    folder = root / "hf"
    folder.mkdir()
    rows = _rows(docs)
    names = ["data-00000-of-00002.arrow", "data-00001-of-00002.arrow"]
    for name, part in zip(names, (rows[:10], rows[10:])):
        table = pa.Table.from_pylist(part)
        with pa.OSFile(str(folder / name), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            for batch in table.to_batches(max_chunksize=4):
                writer.write_batch(batch)
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": n} for n in names]}))
    (folder / "dataset_info.json").write_text(json.dumps({"features": {}}))
    return folder


def real_dataset(root: Path, docs: list[str]) -> Path:
    return FIXTURES / "hf_dataset"  # written by datasets 5.2.0 from make_documents(24, seed=5)


# (writer, --text-field, --filter, the languages kept (None: no filter))
FORMATS = {
    "parquet": (write_parquet, "content", ["lang=Python,Go"], {"Python", "Go"}),
    "json.gz": (write_json_gz, "text", [], None),
    "jsonl.zst": (write_jsonl_zst, "text", [], None),
    "s2orc": (write_s2orc, "content.text", [], None),
    "datasets-pyarrow": (write_dataset_folder, "content", ["lang=Markdown"], {"Markdown"}),
    "datasets-real": (real_dataset, "content", ["lang=Python"], {"Python"}),
}


@pytest.mark.parametrize("kind", FORMATS)
def test_format_round_trips_to_documents_joined_by_eos(kind, tmp_path, neox):
    write, text_field, filters, langs = FORMATS[kind]
    docs = make_documents(24, seed=5)
    source = write(tmp_path, docs)
    kept = [d for i, d in enumerate(docs) if langs is None or LANGS[i % 3] in langs]
    summary = prepare([str(source)], str(tmp_path / "out"), NEOX_NAME, max_seq_len=SEQ,
                      text_field=text_field, filters=filters)
    stream = expected_stream(neox, kept)
    tokens = read_tokens(tmp_path / "out")
    assert tokens.ravel().tolist() == stream[: tokens.size] and len(stream) - tokens.size < SEQ
    assert (summary.documents, summary.filtered, summary.tokens) == (len(kept), len(docs) - len(kept), len(stream))


def test_a_dataset_dict_folder_asks_for_one_split(tmp_path):
    folder = FIXTURES / "hf_dataset_dict"
    with pytest.raises(UserError, match=r"a Hugging Face DatasetDict \(splits: train, test\); pass one split's "
                                        r"folder, e.g. .*hf_dataset_dict/train"):
        prepare([str(folder)], str(tmp_path / "out"), NEOX_NAME, max_seq_len=SEQ, text_field="content")
    summary = prepare([str(folder / "test")], str(tmp_path / "out"), NEOX_NAME, max_seq_len=SEQ, text_field="content")
    assert summary.documents == 4 and summary.files == 1  # its arrow file; not state.json / dataset_info.json


@pytest.mark.parametrize("kind,text_field,filters,message", [
    ("parquet", "text", [], r"data-00000-of-00001.parquet: no column 'text' \(columns: content, lang, size\); "
                            r"pass --text-field NAME"),
    ("parquet", "content.text", [], r"no field 'content.text' \(column 'content' is string\)"),
    ("parquet", "size", [], r"column 'size' is int64, not text; pass --text-field NAME of a string column"),
    ("parquet", "content", ["language=Python"], r"no column 'language' \(columns: content, lang, size\); check --filter"),
    ("datasets-pyarrow", "body", [], r"hf/data-00000-of-00002.arrow: no column 'body' \(columns: content, lang, size\)"),
    ("datasets-real", "content.text", [], r"no field 'content.text' \(column 'content' is string\)"),
    ("s2orc", "content.body", [], r"s2orc-0000.jsonl:1: no 'content.body' field \(keys of 'content': text, annotations\); "
                                  r"--text-field NAME reads another field"),
    ("json.gz", "content", [], r"json.gz:1: no 'content' field \(keys: text, timestamp, url\)"),
    ("jsonl.zst", "text", ["meta.lang=en"], r"jsonl.zst:1: no 'meta.lang' field \(keys of 'meta': source, n\) for --filter"),
])
def test_wrong_field_names_the_file_and_the_fields_it_has(kind, text_field, filters, message, tmp_path):
    source = FORMATS[kind][0](tmp_path, make_documents(24, seed=5))
    with pytest.raises(UserError, match=message):
        prepare([str(source)], str(tmp_path / "out"), NEOX_NAME, max_seq_len=SEQ, text_field=text_field,
                filters=filters)
    assert not (tmp_path / "out").exists()


def test_script_reports_a_wrong_column_in_one_line(tmp_path):
    source = write_parquet(tmp_path, make_documents(5, seed=1))
    done = subprocess.run([sys.executable, str(REPO / "scripts/data_prep.py"), str(source), "--out", str(tmp_path / "out"),
                           "--tokenizer", NEOX_NAME, "--max-seq-len", "4"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: {source}: no column 'text' (columns: content, lang, size); pass --text-field NAME; fix the input "
        f"or pass --skip-bad to skip (and count) bad records"]


@pytest.mark.parametrize("name,filters,message", [
    ("a.txt", ["lang=Python"], r"a.txt: a plain text file has no fields for --filter"),
    ("a.parquet.zst", [], r"a.parquet.zst: a compressed .parquet file cannot be read a batch at a time"),
    ("a.parquet", [], r"a.parquet: not a readable parquet / arrow file"),
])
def test_inputs_that_cannot_be_read_say_why(name, filters, message, tmp_path):
    (tmp_path / name).write_bytes(b"some bytes that are no parquet")
    with pytest.raises(UserError, match=message):
        prepare([str(tmp_path / name)], str(tmp_path / "out"), NEOX_NAME, max_seq_len=SEQ, filters=filters)
