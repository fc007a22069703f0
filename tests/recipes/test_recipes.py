"""Every recipe in yamls/ validates, builds its model on the meta device at the expected size, mixes
data that sums to 1, and trains 2 steps on CPU once shrunk by command-line overrides alone; so does an
llm-foundry recipe written in their schema."""
import math
from pathlib import Path

import pytest

from llmtrain.builders import build_model
from llmtrain.builders import load_config
from llmtrain.train import train
from tests.checkpoint.harness import records
from tests.data.corpus import write_stream_shards

ROOT = Path(__file__).resolve().parents[2]
PRESETS = sorted(p.name for p in (ROOT / "yamls").glob("mpt-*.yaml"))
# (name, low, high) in parameters: MPT-7B is 6,649,286,656 (the "6.7B" of the model card, rounded)
SIZES = {"mpt-125m.yaml": (0.11e9, 0.14e9), "mpt-350m.yaml": (0.32e9, 0.38e9), "mpt-760m.yaml": (0.70e9, 0.80e9),
         "mpt-1b.yaml": (1.25e9, 1.40e9), "mpt-3b.yaml": (2.6e9, 2.8e9), "mpt-7b.yaml": (6.64e9, 6.7e9)}
SEQ = 32


def expected_params(m: dict) -> int:
    """Tied embedding + per block (qkv, out, up, down: 12·d²; two norm weights) + final norm."""
    d = m["d_model"]
    return m["vocab_size"] * d + m["n_layers"] * (12 * d * d + 2 * d) + d


def test_every_preset_is_listed():
    assert set(PRESETS) == set(SIZES)


@pytest.mark.parametrize("recipe", PRESETS)
def test_recipe_builds_on_meta_at_its_size_and_mixes_to_one(recipe):
    cfg = load_config(ROOT / "yamls" / recipe)
    model = build_model({**cfg.model, "init_device": "meta"})
    n = sum(p.numel() for p in model.parameters())
    assert all(p.is_meta for p in model.parameters())
    assert n == expected_params(cfg.model)
    low, high = SIZES[recipe]
    assert low <= n <= high
    streams = cfg.train_loader["dataset"]["streams"]
    assert len(streams) == 10
    assert sum(s["proportion"] for s in streams.values()) == pytest.approx(1.0, abs=1e-12)
    assert cfg.optimizer["name"] == "decoupled_lionw" and cfg.model["attn_config"]["alibi"]


def test_tiny_recipe_validates_and_mixes_to_one():
    """yamls/tiny.yaml (what `make train` runs) is held to the same checks, at its own size."""
    cfg = load_config(ROOT / "yamls" / "tiny.yaml")
    model = build_model({**cfg.model, "init_device": "meta"})
    assert sum(p.numel() for p in model.parameters()) == expected_params(cfg.model)
    streams = cfg.train_loader["dataset"]["streams"]
    assert sum(s["proportion"] for s in streams.values()) == pytest.approx(1.0, abs=1e-12)


def test_mpt_7b_is_the_seed_recipe():
    cfg = load_config(ROOT / "yamls" / "mpt-7b.yaml")
    m = cfg.model
    assert (m["n_layers"], m["n_heads"], m["d_model"], m["expansion_ratio"], m["vocab_size"], m["max_seq_len"]) == \
        (32, 32, 4096, 4, 50432, 2048)
    assert m["no_bias"] and m["norm_type"] == "low_precision_layernorm" and not m.get("learned_pos_emb", False)
    assert cfg.global_train_batch_size == 1760
    assert int(cfg.max_duration.removesuffix("ba")) * 1760 * 2048 >= 1e12 > (int(cfg.max_duration.removesuffix("ba")) - 1) * 1760 * 2048
    proportions = {k: v["proportion"] for k, v in cfg.train_loader["dataset"]["streams"].items()}
    assert proportions == {"mc4_en": 0.33, "c4_en_semdedup": 0.299, "redpajama_commoncrawl": 0.10, "the_stack": 0.10,
                           "redpajama_wikipedia": 0.04, "the_stack_markdown": 0.035, "s2orc": 0.033,
                           "redpajama_books": 0.03, "redpajama_arxiv": 0.019, "redpajama_stackexchange": 0.014}
    assert cfg.fsdp_config["activation_checkpointing"] and cfg.autoresume
    assert cfg.save_folder.startswith("s3://") and "wandb" in cfg.loggers


@pytest.fixture(scope="module")
def mix_shards(tmp_path_factory) -> Path:
    """Tiny shards for the ten stream names the presets use, plus train/val splits for llm-foundry's layout."""
    names = load_config(ROOT / "yamls" / "mpt-7b.yaml").train_loader["dataset"]["streams"]
    return write_stream_shards(tmp_path_factory.mktemp("mix"), [*names, "foundry/train", "foundry/val"], SEQ, 12)


SHRINK = ["model.d_model=32", "model.n_heads=2", "model.n_layers=1", f"variables.max_seq_len={SEQ}",
          "global_train_batch_size=2", "device_train_microbatch_size=1", "max_duration=2ba",
          "train_loader.num_workers=0", "autoresume=false", "precision=fp32"]


def train_two_steps(recipe: Path, overrides: list[str], run_dir: Path) -> list[dict]:
    trainer = train(load_config(recipe, [*SHRINK, *overrides, f"run_dir={run_dir}", f"save_folder={run_dir}/ckpt"]))
    trainer.close()
    return records(run_dir / "metrics.jsonl")


def assert_two_finite_train_steps(records: list[dict]) -> None:
    losses = {r["step"]: r["loss"] for r in records if "loss" in r}
    assert sorted(losses) == [1, 2] and all(math.isfinite(v) for v in losses.values())


@pytest.mark.parametrize("recipe", PRESETS)
def test_recipe_trains_two_steps_on_cpu(recipe, mix_shards, tmp_path):
    records = train_two_steps(ROOT / "yamls" / recipe, [
        f"variables.data_remote={mix_shards}", f"variables.data_local={tmp_path}/cache", "~loggers.wandb",
        "~compile_config"], tmp_path)  # compiling on CPU costs more than two steps
    assert_two_finite_train_steps(records)


def test_llm_foundry_recipe_trains_two_steps_with_data_paths_overridden(mix_shards, tmp_path):
    records = train_two_steps(ROOT / "tests" / "recipes" / "llm_foundry_mpt_125m.yaml", [
        f"variables.data_local={mix_shards}/foundry", "variables.run_name=foundry", "eval_loader.num_workers=0",
        "eval_interval=2ba", "device_eval_batch_size=2"], tmp_path)
    assert_two_finite_train_steps(records)
    evaluated = [r for r in records if "metrics/eval/LanguageCrossEntropy" in r]
    assert evaluated and math.isfinite(evaluated[-1]["metrics/eval/LanguageCrossEntropy"])
