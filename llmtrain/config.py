"""The run config: YAML + CLI overrides → a validated, typed `TrainConfig`.

Top-level keys are llm-foundry's, so their recipes carry over. Every error a user can make here —
missing file, YAML syntax, bad override, broken `${...}` interpolation, unknown or misspelled key,
wrong type — is a one-line `UserError` raised before anything is built. Component sections (`model:`,
`optimizer:`, `callbacks:`, ...) are checked by their registry entries: `llmtrain.builders.validate(cfg)`,
which `llmtrain.builders.load_config` runs after this module's `load_config`.

This module sits at the bottom of the import graph: it imports only the schema and error helpers (and the
ICL task sections' schema), never a component, so every other module may import it.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Optional, Union

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
import yaml

from llmtrain.errors import UserError
from llmtrain.eval.tasks import GauntletConfig, ICLTaskConfig, check_sections, read_sections
from llmtrain.schema import Duration, parse_section

# A field that is part of the config object but not a YAML key (schema.parse_section leaves it out).
NOT_A_KEY = {"yaml": False}


@dataclass(frozen=True)
class TokenizerConfig:
    name: str
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Fp8Config:
    """The `fp8:` section, read with `precision: amp_fp8` (llmtrain/models/fp8.py)."""

    # torchao's recipes: one scale per tensor (fastest), per row, or per row with the grad-weight GEMM
    # kept in high precision (most accurate).
    recipe: Literal["tensorwise", "rowwise", "rowwise_with_gw_hp"] = "tensorwise"
    # The two gradient GEMMs in Hopper's fast-accumulation mode too (torchao uses it for the forward GEMM
    # only): faster backward, accumulation with less precision. Not measured yet (docs/performance.md).
    fast_accum: bool = False
    # float8 numerics emulated in high precision: for tests on machines without FP8 GEMMs (CPU).
    emulate: bool = False


# --- fsdp_config: llm-foundry's FSDP1 keys, or FSDP2's own (llmtrain/distributed.py maps them) -------------

_REFUSED = {
    "cpu_offload": "parameter CPU offload is not supported by Composer's FSDP2 path; remove it "
                   "(activation_cpu_offload: true offloads activations instead)",
    "sharded_ckpt_prefix_dir": "FSDP2 checkpoints are always torch distributed checkpoints; remove it",
}


@dataclass(frozen=True)
class FSDPConfig:
    sharding_strategy: Literal["FULL_SHARD", "SHARD_GRAD_OP", "HYBRID_SHARD", "_HYBRID_SHARD_ZERO2"] = "FULL_SHARD"
    reshard_after_forward: Optional[bool] = None  # FSDP2's own knob; overrides sharding_strategy
    mixed_precision: Literal["DEFAULT", "PURE", "FULL"] = "DEFAULT"
    activation_checkpointing: bool = False
    activation_checkpointing_reentrant: bool = False  # FSDP2 checkpointing is always non-reentrant
    activation_cpu_offload: bool = False
    state_dict_type: Literal["sharded", "full"] = "sharded"
    load_monolith_rank0_only: bool = False
    verbose: bool = False
    # FSDP1 knobs that FSDP2 does by construction:
    use_orig_params: bool = True
    limit_all_gathers: bool = True
    forward_prefetch: bool = False
    backward_prefetch: Optional[str] = None
    sync_module_states: bool = False


def validate_fsdp_section(section: dict, key: str = "fsdp_config") -> FSDPConfig:
    """The parsed `fsdp_config:` section; knobs with no FSDP2 counterpart in Composer are refused with the reason."""
    for name, why in _REFUSED.items():
        if name in section:
            raise UserError(f"{key}.{name}: {why}")
    return parse_section(FSDPConfig, section, key)


@dataclass(frozen=True)
class TrainConfig:
    model: dict
    tokenizer: TokenizerConfig
    train_loader: dict
    optimizer: dict
    max_duration: Duration
    max_seq_len: int
    global_train_batch_size: int
    variables: dict = field(default_factory=dict)
    eval_loader: Optional[dict] = None
    eval_interval: Duration = 1
    eval_first: bool = False
    eval_subset_num_batches: int = -1
    # In-context-learning tasks scored every eval_interval (llmtrain/eval/; a list, or a YAML file's path)
    icl_tasks: Optional[list[ICLTaskConfig]] = None
    eval_gauntlet: Optional[GauntletConfig] = None
    scheduler: Optional[dict] = None
    algorithms: dict = field(default_factory=dict)
    device_train_microbatch_size: Union[int, Literal["auto"]] = 1
    device_eval_batch_size: Optional[int] = None
    # amp_fp8: bf16 autocast with the blocks' GEMMs in float8 (torchao; the `fp8:` section, llmtrain/models/fp8.py)
    precision: Literal["fp32", "amp_bf16", "amp_fp16", "amp_fp8"] = "amp_bf16"
    fp8: Fp8Config = field(default_factory=Fp8Config)
    fsdp_config: Optional[dict] = None
    compile_config: Optional[dict] = None
    save_folder: Optional[str] = None
    save_interval: Duration = "1000ba"
    save_num_checkpoints_to_keep: int = -1
    save_overwrite: bool = False
    save_weights_only: bool = False
    load_path: Optional[str] = None
    load_weights_only: bool = False
    load_strict_model_weights: bool = True
    autoresume: bool = False
    loggers: dict = field(default_factory=dict)
    callbacks: dict = field(default_factory=dict)
    seed: int = 17
    run_name: Optional[str] = None
    run_dir: Optional[str] = None  # default runs/{run_name}: config.yaml and metrics.jsonl live here
    log_interval: Duration = "1ba"
    console_log_interval: Duration = "1ba"
    progress_bar: Optional[bool] = None  # None: a bar when stdout is a terminal
    log_to_console: bool = True  # the compact progress lines (llmtrain.callbacks.progress)
    dist_timeout: float = 600.0
    # Seconds a read or upload keeps retrying while the object store is down; None: min(300, dist_timeout / 2).
    object_store_retry_timeout: Optional[float] = None
    device: Optional[Literal["cpu", "gpu"]] = None  # None: a GPU when there is one
    python_log_level: Optional[str] = None
    # dotted key -> its value with environment reads shown as <env:NAME> (not a YAML key)
    from_environment: dict = field(default_factory=dict, repr=False, compare=False, metadata=NOT_A_KEY)

    def to_dict(self) -> dict:
        data = asdict(self)
        del data["from_environment"]
        return data

    def recorded(self) -> dict:
        """The config to write down: every value that came from `${oc.env:...}` shown as <env:NAME>."""
        data = self.to_dict()
        for dotted, masked in self.from_environment.items():
            *parents, leaf = dotted.split(".")
            node = data
            for key in parents:
                node = node[key]
            node[leaf] = masked
        return data


_KEY = r"[A-Za-z_][\w-]*(?:\.[\w-]+)*"
_OVERRIDE = re.compile(rf"^({_KEY})=(.*)$", re.S)
_DELETION = re.compile(rf"^~({_KEY})$")


def _override_value(item: str, text: str):
    try:  # OmegaConf's YAML reading, so 1e-4 is a float as it is in the recipe files
        return OmegaConf.to_container(OmegaConf.from_dotlist([f"v={text}"]))["v"]
    except (yaml.YAMLError, OmegaConfBaseException):
        raise UserError(f"override '{item}': the value '{text}' is not valid YAML; quote it or fix the brackets") from None


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `dotted.key=value` (values parsed as YAML; mappings merge into what is there) and
    `~dotted.key` (removes the key), left to right."""
    cfg = OmegaConf.create(data)
    for item in overrides:
        if deletion := _DELETION.match(item):
            *parents, leaf = deletion.group(1).split(".")
            node = OmegaConf.select(cfg, ".".join(parents)) if parents else cfg
            if not isinstance(node, DictConfig) or leaf not in node:
                raise UserError(f"override '{item}': there is no key {deletion.group(1)} to remove")
            del node[leaf]
            continue
        match = _OVERRIDE.match(item)
        if not match:
            raise UserError(f"override '{item}': expected dotted.key=value (or ~dotted.key to remove a key), "
                            "e.g. optimizer.lr=1e-4")
        key, text = match.groups()
        try:
            OmegaConf.update(cfg, key, _override_value(item, text), merge=True, force_add=True)
        except OmegaConfBaseException as err:
            raise UserError(f"override '{item}': {str(err).splitlines()[0]}") from None
    return OmegaConf.to_container(cfg)


def _load_yaml(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"config file '{path}' not found; pass the path of a YAML recipe, e.g. yamls/tiny.yaml")
    try:
        data = OmegaConf.to_container(OmegaConf.load(path))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise UserError(f"{where}: {problem}; fix the YAML syntax there") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a run config must be a mapping of keys (model:, train_loader:, ...)")
    return data


def resolve(data: dict, source: str) -> dict:
    """Resolve `${...}` interpolations (`${variables.x}` and friends) into plain values."""
    try:
        return OmegaConf.to_container(OmegaConf.create(data), resolve=True)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        msg = str(err).splitlines()[0]
        raise UserError(f"{key}: {msg} (in {source}); define it under variables: or fix the ${{...}} reference") from None


_ENV_READ = re.compile(r"\$\{oc\.env:([^,}]+)[^}]*\}")


def _mask_environment(data: Any) -> Any:
    """A copy of the raw config with each `${oc.env:NAME}` replaced by the text <env:NAME>."""
    if isinstance(data, dict):
        return {k: _mask_environment(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_mask_environment(v) for v in data]
    return _ENV_READ.sub(r"<env:\1>", data) if isinstance(data, str) else data


def _leaves_with(data: Any, marker: str, prefix: str = "") -> dict:
    if isinstance(data, dict):
        found = {}
        for key, value in data.items():
            found.update(_leaves_with(value, marker, f"{prefix}{key}."))
        return found
    return {prefix[:-1]: data} if marker in str(data) else {}


_DURATIONS = ("max_duration", "eval_interval", "save_interval", "log_interval", "console_log_interval")


def _check_durations(cfg: TrainConfig) -> None:
    from composer.core import Time

    for key in _DURATIONS:
        value = getattr(cfg, key)
        if isinstance(value, str):
            try:
                Time.from_timestring(value)
            except ValueError:
                raise UserError(f"{key}: '{value}' is not a duration; use a number and a unit, e.g. 100ba (batches), "
                                "1ep (epochs), 10000tok (tokens), 500sp (samples) or 0.5dur (of max_duration)") from None


# Counts and sizes of the top level: the least each may be (eval_subset_num_batches and
# save_num_checkpoints_to_keep also take -1: all).
_AT_LEAST = {"max_seq_len": 1, "global_train_batch_size": 1, "device_train_microbatch_size": 1,
             "device_eval_batch_size": 1, "eval_subset_num_batches": 1, "save_num_checkpoints_to_keep": 0,
             "dist_timeout": 1e-3, "object_store_retry_timeout": 0}
_ALL = ("eval_subset_num_batches", "save_num_checkpoints_to_keep")


def _check_ranges(cfg: TrainConfig) -> None:
    """One line for a count or size out of its range, before Composer fails on it deep inside (e.g.
    device_train_microbatch_size=0 was `RuntimeError: split_size can only be 0 ...`)."""
    for key, least in _AT_LEAST.items():
        value = getattr(cfg, key)
        if value is None or value == "auto" or (key in _ALL and value == -1):
            continue
        if value < least:
            bound = f"at least {least}" if least else "0 or more"
            also = " (or -1 for all)" if key in _ALL else ""
            raise UserError(f"{key}: {value} is out of range; it must be {bound}{also}")


def _check_sections(cfg: TrainConfig) -> None:
    _check_durations(cfg)
    _check_ranges(cfg)
    if cfg.autoresume and not cfg.save_folder:
        raise UserError("autoresume: true needs a save_folder to resume from; set save_folder, or autoresume=false")
    check_sections(cfg.icl_tasks, cfg.eval_gauntlet)
    if cfg.eval_gauntlet is not None and not cfg.icl_tasks:
        raise UserError("eval_gauntlet: needs icl_tasks to average; add icl_tasks or remove eval_gauntlet")
    if cfg.fsdp_config is not None:
        validate_fsdp_section(cfg.fsdp_config)


def _with_retry_timeout(cfg: TrainConfig) -> TrainConfig:
    limit = cfg.object_store_retry_timeout
    if limit is None:
        return replace(cfg, object_store_retry_timeout=min(300.0, cfg.dist_timeout / 2))
    if limit <= 0:
        raise UserError(f"object_store_retry_timeout: must be a positive number of seconds, got {limit:g}")
    if limit >= cfg.dist_timeout:  # the other ranks would give up on this one first, with a timeout error
        raise UserError(f"object_store_retry_timeout: {limit:g} s is not below dist_timeout ({cfg.dist_timeout:g} s), "
                        "so a rank waiting out an outage would time out the others' collectives; lower it or "
                        "raise dist_timeout")
    return cfg


def load_config(path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    """Load, override, interpolate and check a run config; raises UserError on any mistake in it. Its
    component sections are checked by `llmtrain.builders.validate` (`llmtrain.builders.load_config` runs both)."""
    path = Path(path)
    return config_from_dict(_load_yaml(path), overrides, source=str(path), default_run_name=path.stem)


def config_from_dict(data: dict, overrides: list[str] = (), source: str = "<config>",
                     default_run_name: str = "run") -> TrainConfig:
    """The same as `load_config` for a recipe already read into a dict."""
    data = apply_overrides(data, list(overrides))
    cfg = parse_section(TrainConfig, read_sections(resolve(data, source)), "")
    _check_sections(cfg)
    cfg = _with_retry_timeout(cfg)
    if cfg.run_name is None:
        cfg = replace(cfg, run_name=default_run_name)
    masked = _mask_environment(data)
    if masked != data:  # resolved again with the environment masked: also catches ${variables.x} uses
        cfg = replace(cfg, from_environment=_leaves_with(resolve(masked, source), "<env:"))
    return cfg
