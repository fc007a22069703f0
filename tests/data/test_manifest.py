"""data prep's per-input summary and the manifest.json it leaves in the output, so a mix can be audited."""
import hashlib
import json

from llmtrain.data.prep import prepare
from llmtrain.data.tokenizer import NEOX_NAME
from tests.data.corpus import make_documents
from tests.data.test_prep import expected_stream, read_tokens
from tests.data.test_sources import write_json_gz, write_parquet


def test_manifest_lists_every_input_file_and_what_each_input_gave(tmp_path, neox):
    docs = make_documents(30, seed=3)
    (tmp_path / "stack").mkdir()
    (tmp_path / "c4").mkdir()
    parquet = write_parquet(tmp_path / "stack", docs[:18])  # languages cycle Python, Go, Markdown
    (tmp_path / "stack" / "notes.jsonl").write_text(json.dumps({"content": docs[18], "lang": "Go"}) + "\n"
                                                    + '{"content": broken\n')
    c4 = write_json_gz(tmp_path / "c4", docs[19:])
    summary = prepare([str(tmp_path / "stack"), str(c4)], str(tmp_path / "out"), NEOX_NAME, max_seq_len=8,
                      skip_bad=True, text_field="content", filters=["lang=Go,Markdown"])
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())

    stack, gz = manifest["inputs"]
    assert [f["path"] for f in stack["files"]] == [str(parquet), str(tmp_path / "stack" / "notes.jsonl")]
    for f in stack["files"] + gz["files"]:
        data = open(f["path"], "rb").read()
        assert (f["bytes"], f["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    stack_kept = [d for i, d in enumerate(docs[:18]) if i % 3] + [docs[18]]
    assert (stack["input"], stack["documents"], stack["filtered"], stack["skipped"]) == \
        (str(tmp_path / "stack"), 13, 6, {"not valid JSON": 1})
    assert stack["tokens"] == len(expected_stream(neox, stack_kept))
    # the C4 file has no `lang` field for the filter: every line is skipped and counted
    assert (gz["documents"], gz["skipped"], gz["tokens"]) == (0, {"no 'lang' field": 11}, 0)

    totals = manifest["totals"]
    assert totals == {"files": 3, "documents": 13, "tokens": stack["tokens"], "samples": summary.samples,
                      "shards": summary.shards, "dropped_tail_tokens": summary.dropped_tail_tokens}
    assert totals["samples"] * 8 + totals["dropped_tail_tokens"] == totals["tokens"]
    assert manifest["max_seq_len"] == 8 and manifest["dtype"] == "uint16"
    assert manifest["tokenizer"]["name"] == NEOX_NAME and manifest["tokenizer"]["eos_id"] == neox.eos_token_id
    assert manifest["tokenizer"]["sha256"] == hashlib.sha256(neox.backend_tokenizer.to_str().encode()).hexdigest()
    assert manifest["options"] == {"text_field": "content", "filters": ["lang=Go,Markdown"], "skip_bad": True,
                                   "compression": None, "shard_size": "64mb"}

    lines = summary.lines()
    assert lines[lines.index("per input:") + 1:] == [
        f"  {tmp_path / 'stack'}: 2 files, {sum(f['bytes'] for f in stack['files']) / 1e6:,.1f} MB -> 13 documents, "
        f"{stack['tokens']:,} tokens; 6 filtered out, 0 empty, 1 skipped (1 x not valid JSON)",
        f"  {c4}: 1 files, {gz['files'][0]['bytes'] / 1e6:,.1f} MB -> 0 documents, 0 tokens; 0 filtered out, "
        f"0 empty, 11 skipped (11 x no 'lang' field)"]


def test_the_loader_reads_an_output_with_its_manifest(tmp_path):
    """index.json lists only the shards; the manifest sits beside it and the loader reads the samples as before."""
    (tmp_path / "a.txt").write_text("one two three four five six seven eight")
    summary = prepare([str(tmp_path / "a.txt")], str(tmp_path / "out"), NEOX_NAME, max_seq_len=2)
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert {s["raw_data"]["basename"] for s in index["shards"]} | {"index.json", "manifest.json"} == \
        {p.name for p in (tmp_path / "out").iterdir()}
    assert read_tokens(tmp_path / "out").shape == (summary.samples, 2)
