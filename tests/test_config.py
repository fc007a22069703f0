"""Run-config loading: overrides, interpolation, and one clear line for each kind of mistake."""
from pathlib import Path

import pytest
import yaml

from llmtrain.builders import load_config
from llmtrain.config import apply_overrides
from llmtrain.errors import UserError

TINY = Path(__file__).resolve().parents[1] / "yamls" / "tiny.yaml"


def write_recipe(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load(TINY.read_text())
    edit(data)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_tiny_recipe_loads_with_interpolation_and_overrides():
    cfg = load_config(TINY, ["optimizer.lr=1e-4", "max_duration=10ba", "model.n_layers=3"])
    assert cfg.optimizer["lr"] == pytest.approx(1e-4) and isinstance(cfg.optimizer["lr"], float)
    assert cfg.max_duration == "10ba"
    assert cfg.model["n_layers"] == 3
    assert cfg.model["max_seq_len"] == cfg.max_seq_len == 128  # ${variables.max_seq_len}
    assert cfg.train_loader["dataset"]["shuffle_seed"] == cfg.seed
    assert cfg.run_name == "tiny"


def test_overrides_add_merge_and_remove_keys():
    data = {"optimizer": {"name": "decoupled_lionw", "betas": [0.9, 0.99]}, "y": 1}
    assert apply_overrides(data, ["a.b.c=[1, 2]", "x=true", "optimizer={name: adamw, lr: 1e-3}", "~optimizer.betas"]) == {
        "optimizer": {"name": "adamw", "lr": 1e-3}, "y": 1, "a": {"b": {"c": [1, 2]}}, "x": True}


def drop(*keys):
    def edit(d):
        node = d
        for k in keys[:-1]:
            node = node[k]
        del node[keys[-1]]
    return edit


def put(value, *keys):
    def edit(d):
        node = d
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    return edit


BAD_RECIPES = [
    ("typo at top level", put("10ba", "max_durration"), r"^max_durration: unknown key \(did you mean 'max_duration'\?\)"),
    ("missing model", drop("model"), r"^model: required key is missing"),
    ("wrong type", put("lots", "global_train_batch_size"), r"^global_train_batch_size: expected an integer, got str 'lots'"),
    ("bad interpolation", put("${variables.nope}", "max_seq_len"), r"^max_seq_len: Interpolation key 'variables.nope' not found"),
    ("unknown model name", put("mpt_causal", "model", "name"), r"^model.name: unknown model 'mpt_causal' \(did you mean 'mpt_causal_lm'\?\)"),
    ("unknown optimizer", put("lion", "optimizer", "name"), r"^optimizer.name: unknown optimizer 'lion'.*decoupled_lionw"),
    ("optimizer key typo", put(0.9, "optimizer", "beta1"), r"^optimizer.beta1: unknown key \(did you mean 'betas'\?\)"),
    ("optimizer wrong type", put("fast", "optimizer", "lr"), r"^optimizer.lr: expected a number, got str 'fast'"),
    ("scheduler missing warmup", drop("scheduler", "t_warmup"), r"^scheduler.t_warmup: required key is missing"),
    ("unknown callback", put({}, "callbacks", "speed_monitr"), r"^callbacks.speed_monitr: unknown callback 'speed_monitr' \(did you mean 'speed_monitor'\?\)"),
    ("bad precision", put("bf16", "precision"), r"^precision: 'bf16' is not allowed.*amp_bf16"),
    ("scheduler without name", drop("scheduler", "name"), r"^scheduler.name: required key is missing"),
    ("fsdp1-only key refused", put({"cpu_offload": True}, "fsdp_config"), r"^fsdp_config.cpu_offload: parameter CPU offload is not supported"),
    ("fsdp strategy typo", put({"sharding_strategy": "FULL"}, "fsdp_config"), r"^fsdp_config.sharding_strategy: 'FULL' is not allowed \(did you mean 'FULL_SHARD'\?\)"),
    ("model key typo", put(True, "model", "attn_config", "alibii"), r"^model.attn_config.alibii: unknown key \(did you mean 'alibi'\?\)"),
    ("dataloader key typo", put(2, "train_loader", "num_worker"), r"^train_loader.num_worker: unknown key \(did you mean 'num_workers'\?\)"),
]


@pytest.mark.parametrize("name,edit,pattern", BAD_RECIPES, ids=[c[0] for c in BAD_RECIPES])
def test_bad_recipe_is_one_clear_line(tmp_path, name, edit, pattern):
    with pytest.raises(UserError, match=pattern) as err:
        load_config(write_recipe(tmp_path, edit))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("overrides,pattern", [
    (["optimizer.lr"], r"^override 'optimizer.lr': expected dotted.key=value"),
    (["~optimizer.nope"], r"^override '~optimizer.nope': there is no key optimizer.nope to remove"),
    (["=3"], r"^override '=3': expected dotted.key=value"),
    (["model.d_model=[1, 2"], r"^override 'model.d_model=\[1, 2': the value '\[1, 2' is not valid YAML"),
    (["optimizer.lr=abc"], r"^optimizer.lr: expected a number, got str 'abc'"),
])
def test_bad_override_is_one_clear_line(overrides, pattern):
    with pytest.raises(UserError, match=pattern):
        load_config(TINY, overrides)


def test_missing_yaml_file():
    with pytest.raises(UserError, match=r"^config file 'nope.yaml' not found"):
        load_config("nope.yaml")


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("model:\n  name: mpt_causal_lm\n  d_model: [128\n")
    with pytest.raises(UserError, match=r"broken.yaml:\d+: .*fix the YAML syntax"):
        load_config(path)
