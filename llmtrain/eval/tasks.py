"""The `icl_tasks:` and `eval_gauntlet:` sections: llm-foundry's keys, typed and checked up front.

`icl_tasks:` is a list of tasks, or the path of a YAML file holding `icl_tasks:` (llm-foundry's
tasks_*.yaml load unchanged). `eval_gauntlet:` is a mapping, or the path of a YAML file holding
`eval_gauntlet:`. `read_sections(data)` replaces such paths by what their files hold, so the rest of
config validation (and the recorded config.yaml) sees the tasks themselves; `check_sections(cfg)`
checks what the types alone cannot (unique labels, gauntlet benchmarks that name a task).
Errors are one-line UserErrors naming the key (and the file, for sections read from one).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from llmtrain.errors import UserError
from llmtrain.schema import parse_section

TaskType = Literal["language_modeling", "multiple_choice", "schema", "question_answering"]

# llm-foundry keys this implementation does not act on, and what to do instead: refused, never ignored.
_UNSUPPORTED = {
    "has_categories": "per-category scores are not supported; split the file into one task per category",
    "pass_at_k": "code evaluation is not supported",
    "cot_delimiter": "chain-of-thought answers are not supported",
    "hf_loading_vars": "Hugging Face datasets are not read; point dataset_uri at a jsonl file",
    "hf_parsing_map": "Hugging Face datasets are not read; point dataset_uri at a jsonl file",
}


@dataclass(frozen=True)
class ICLTaskConfig:
    label: str
    dataset_uri: str                         # a local jsonl file or s3://bucket/key.jsonl
    icl_task_type: TaskType
    num_fewshot: list[int] = field(default_factory=lambda: [0])
    continuation_delimiter: str = " "
    example_delimiter: str = "\n"
    prompt_string: str = ""
    max_seq_len: Optional[int] = None        # None: the model's max_seq_len
    fewshot_random_seed: int = 1234
    # multiple_choice / schema: pick the choice of highest mean (not summed) log-likelihood per token
    length_normalize: bool = False
    # question_answering: the answer ends where one of these strings begins in the generated text
    early_stopping_criteria: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class GauntletBenchmark:
    name: str           # an icl_tasks label
    num_fewshot: int
    random_baseline: float


@dataclass(frozen=True)
class GauntletCategory:
    name: str
    benchmarks: list[GauntletBenchmark]


@dataclass(frozen=True)
class GauntletConfig:
    categories: list[GauntletCategory]
    weighting: Literal["EQUAL", "SAMPLE_SZ", "LOG_SAMPLE_SZ"] = "EQUAL"
    subtract_random_baseline: bool = True
    rescale_accuracy: bool = True


def _section_from_file(path_text: str, section: str):
    import yaml

    path = Path(path_text)
    if not path.is_file():
        raise UserError(f"{section}: file '{path}' not found; give a list of tasks or the path of a YAML file "
                        f"holding '{section}:'")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise UserError(f"{where}: {problem}; fix the YAML syntax there") from None
    if not isinstance(data, dict) or section not in data:
        raise UserError(f"{path}: expected a top-level '{section}:' key, as in llm-foundry's eval yamls")
    return data[section]


def _line_of(path: Path, section: str, index: int, key: str) -> Optional[int]:
    """The 1-based line of `section[index].key` (or of the entry itself) in the YAML file at `path`."""
    import yaml

    root = yaml.compose(path.read_text())
    entries = next((v for k, v in root.value if k.value == section), None)
    if not isinstance(entries, yaml.SequenceNode) or index >= len(entries.value):
        return None
    entry = entries.value[index]
    if isinstance(entry, yaml.MappingNode):
        for k, _ in entry.value:
            if k.value == key:
                return k.start_mark.line + 1
    return entry.start_mark.line + 1


def _check_task_keys(tasks) -> None:
    for i, task in enumerate(tasks if isinstance(tasks, list) else []):
        for key in task if isinstance(task, dict) else ():
            if key in _UNSUPPORTED:
                raise UserError(f"icl_tasks[{i}].{key}: {_UNSUPPORTED[key]}")
        parse_section(ICLTaskConfig, task, f"icl_tasks[{i}]")


def read_sections(data: dict, defined_in: Optional[str] = None) -> dict:
    """`data` (a resolved recipe) with `icl_tasks` / `eval_gauntlet` paths replaced by their files' contents.
    Refuses llm-foundry keys this implementation does not support. Errors in a tasks file (or in the
    YAML file `defined_in` that holds the list itself) start with its path and line."""
    data = dict(data)
    tasks_file = data["icl_tasks"] if isinstance(data.get("icl_tasks"), str) else defined_in
    for section in ("icl_tasks", "eval_gauntlet"):
        if isinstance(data.get(section), str):
            data[section] = _section_from_file(data[section], section)
    try:
        _check_task_keys(data.get("icl_tasks"))
    except UserError as err:
        located = re.match(r"icl_tasks\[(\d+)\]\.?(\w*)", str(err))
        if tasks_file is None or not located:
            raise
        line = _line_of(Path(tasks_file), "icl_tasks", int(located[1]), located[2])
        raise UserError(f"{tasks_file}:{line}: {err}") from None
    return data


@dataclass(frozen=True)
class EvalSpec:
    """The YAML file scripts/eval.py reads: the two sections a recipe would hold."""
    icl_tasks: list[ICLTaskConfig]
    eval_gauntlet: Optional[GauntletConfig] = None


def load_eval_spec(path_text: str) -> EvalSpec:
    import yaml

    path = Path(path_text)
    if not path.is_file():
        raise UserError(f"{path}: not found; pass a YAML file with icl_tasks: (and optionally eval_gauntlet:)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise UserError(f"{path}{f':{mark.line + 1}' if mark else ''}: invalid YAML; fix the syntax there") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping with icl_tasks: (and optionally eval_gauntlet:)")
    try:
        spec = parse_section(EvalSpec, read_sections(data, defined_in=str(path)), "")
        check_sections(spec.icl_tasks, spec.eval_gauntlet)
    except UserError as err:
        raise UserError(str(err) if str(err).startswith(str(path)) else f"{path}: {err}") from None
    return spec


def check_sections(tasks: Optional[list[ICLTaskConfig]], gauntlet: Optional[GauntletConfig]) -> None:
    """What the types do not say: labels unique, few-shot counts >= 0, gauntlet entries that name a task."""
    tasks = tasks or []
    labels = [t.label for t in tasks]
    for i, task in enumerate(tasks):
        if labels.index(task.label) != i:
            raise UserError(f"icl_tasks[{i}].label: '{task.label}' is used by icl_tasks[{labels.index(task.label)}] "
                            "too; labels name the metrics (icl/<label>/<n>-shot), so make them unique")
        if not task.num_fewshot or any(n < 0 for n in task.num_fewshot):
            raise UserError(f"icl_tasks[{i}].num_fewshot: {task.num_fewshot} must be a non-empty list of counts >= 0, "
                            "e.g. [0, 5]")
        if task.max_seq_len is not None and task.max_seq_len < 2:
            raise UserError(f"icl_tasks[{i}].max_seq_len: {task.max_seq_len} must be at least 2")
    if gauntlet is None:
        return
    shots = {(t.label, n) for t in tasks for n in t.num_fewshot}
    for c, category in enumerate(gauntlet.categories):
        if not category.benchmarks:
            raise UserError(f"eval_gauntlet.categories[{c}].benchmarks: category '{category.name}' lists no "
                            "benchmarks; add one or remove the category")
        for b, bench in enumerate(category.benchmarks):
            key = f"eval_gauntlet.categories[{c}].benchmarks[{b}]"
            if (bench.name, bench.num_fewshot) not in shots:
                raise UserError(f"{key}: no icl_tasks entry has label '{bench.name}' with {bench.num_fewshot} in "
                                f"num_fewshot; known: {', '.join(sorted(f'{l}/{n}-shot' for l, n in shots)) or 'none'}")
            if not 0 <= bench.random_baseline < 1:
                raise UserError(f"{key}.random_baseline: {bench.random_baseline} must be in [0, 1), e.g. 0.25 for "
                                "four choices")
