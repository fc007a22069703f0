"""yamls/data/mpt-7b-sources.yaml: one data_prep command per stream of yamls/mpt-7b.yaml, with the seed's
proportions, each of which runs on a tiny file in its source's layout and keeps the documents it should."""
import gzip
import json
import shlex
from pathlib import Path

import pytest
import yaml

from llmtrain.builders import load_config
from llmtrain.data.prep import build_parser, prepare
from llmtrain.data.tokenizer import install_tokenizers
from tests.data.corpus import make_documents
from tests.data.test_sources import LANGS, write_json_gz, write_jsonl_zst, write_parquet, write_s2orc

ROOT = Path(__file__).resolve().parents[2]
SOURCES = yaml.safe_load((ROOT / "yamls/data/mpt-7b-sources.yaml").read_text())


def write_redpajama_jsonl(root: Path, docs: list[str]) -> Path:
    path = root / "wiki.jsonl"
    path.write_text("".join(json.dumps({"text": d, "meta": {"title": f"t{i}"}}) + "\n" for i, d in enumerate(docs)))
    return path


def write_s2orc_gz(root: Path, docs: list[str]) -> Path:
    plain = write_s2orc(root, docs)
    path = plain.with_suffix(".jsonl.gz")
    path.write_bytes(gzip.compress(plain.read_bytes()))
    plain.unlink()
    return path


# the layout each source ships in (tests/data/test_sources.py) and the languages its filter keeps
LAYOUTS = {"mc4_en": write_json_gz, "c4_en_semdedup": write_json_gz, "redpajama_commoncrawl": write_jsonl_zst,
           "the_stack": write_parquet, "the_stack_markdown": write_parquet, "s2orc": write_s2orc_gz,
           "redpajama_wikipedia": write_redpajama_jsonl, "redpajama_books": write_redpajama_jsonl,
           "redpajama_arxiv": write_redpajama_jsonl, "redpajama_stackexchange": write_redpajama_jsonl}
KEPT_LANGS = {"the_stack": {"Python", "Go"}, "the_stack_markdown": {"Markdown"}}


def test_the_sources_are_mpt_7b_streams_with_the_seeds_proportions():
    cfg = load_config(ROOT / "yamls/mpt-7b.yaml")
    streams = cfg.train_loader["dataset"]["streams"]
    assert list(SOURCES["sources"]) == list(streams) and set(streams) == set(LAYOUTS)
    assert {k: v["proportion"] for k, v in SOURCES["sources"].items()} == {k: v["proportion"] for k, v in streams.items()}
    assert SOURCES["data_remote"] == cfg.variables["data_remote"]
    assert all(s["remote"] == f"{SOURCES['data_remote']}/{name}" for name, s in streams.items())


@pytest.mark.parametrize("name", LAYOUTS)
def test_each_command_reads_its_sources_layout(name, tmp_path):
    install_tokenizers()
    command = SOURCES["sources"][name]["command"].replace("$RAW", str(tmp_path / "raw")).replace("$DATA_REMOTE", "s3://mix")
    words = shlex.split(command)
    assert words[:2] == ["python", "scripts/data_prep.py"]
    args = build_parser().parse_args(words[2:])
    assert (args.inputs, args.out) == ([str(tmp_path / "raw" / name)], f"s3://mix/{name}")
    assert (args.tokenizer, args.max_seq_len) == ("EleutherAI/gpt-neox-20b", 2048)
    (tmp_path / "raw" / name).mkdir(parents=True)
    docs = make_documents(12, seed=4)
    LAYOUTS[name](tmp_path / "raw" / name, docs)
    summary = prepare(args.inputs, str(tmp_path / "out"), args.tokenizer, max_seq_len=16, text_field=args.text_field,
                      filters=args.filters, compression=args.compression)
    langs = KEPT_LANGS.get(name)
    kept = [d for i, d in enumerate(docs) if langs is None or LANGS[i % 3] in langs]
    assert (summary.documents, summary.filtered, summary.skipped_total) == (len(kept), len(docs) - len(kept), 0)
