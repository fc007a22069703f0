"""A task's jsonl file → its examples, every line checked against the task type's format.

Formats (llm-foundry's; string values are stripped of surrounding whitespace, as llm-foundry does):
  language_modeling   {"context": str, "continuation": str}
  multiple_choice     {"query": str, "choices": [str, ...], "gold": int}
  schema              {"context_options": [str, ...], "continuation": str, "gold": int}
  question_answering  {"context": str, "answer": str, "aliases": [str, ...] (optional)}
Other fields are kept and ignored. `dataset_uri` is a local path or s3://bucket/key (read with the
S3_ENDPOINT_URL / AWS_* environment, as the data loaders do). Any mistake is one UserError naming
the file, the line and the field.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from llmtrain.errors import UserError

# field -> (python type, what to write), per task type; a list type means a non-empty list of str
_FORMATS = {
    "language_modeling": {"context": str, "continuation": str},
    "multiple_choice": {"query": str, "choices": list, "gold": int},
    "schema": {"context_options": list, "continuation": str, "gold": int},
    "question_answering": {"context": str, "answer": str},
}
_OPTIONAL_LISTS = {"question_answering": ("aliases",)}


def _read_text(uri: str) -> str:
    if uri.startswith("s3://"):
        from composer.utils import get_file

        with tempfile.TemporaryDirectory(prefix="llmtrain-icl-") as tmp:
            local = Path(tmp) / "task.jsonl"
            try:
                get_file(uri, str(local))
            except Exception as err:  # botocore / Composer raise many types; all mean "cannot read it"
                raise UserError(f"{uri}: cannot read the task file ({type(err).__name__}: "
                                f"{str(err).splitlines()[0] if str(err) else 'no detail'}); check the bucket, key "
                                "and S3_ENDPOINT_URL / AWS_* credentials") from None
            return local.read_text(encoding="utf-8")
    path = Path(uri)
    if not path.is_file():
        raise UserError(f"{uri}: task file not found; dataset_uri must be a local jsonl file or s3://bucket/key")
    return path.read_text(encoding="utf-8")


def _string_list(value, where: str, field: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise UserError(f"{where}: field '{field}' must be a non-empty list of strings, got {value!r:.60}")
    return [v.strip() for v in value]


def _checked(record, task_type: str, where: str) -> dict:
    if not isinstance(record, dict):
        raise UserError(f"{where}: expected a JSON object per line, got {type(record).__name__}")
    example = dict(record)
    for field, kind in _FORMATS[task_type].items():
        if field not in record:
            raise UserError(f"{where}: missing field '{field}'; a {task_type} line needs "
                            f"{', '.join(_FORMATS[task_type])}")
        value = record[field]
        if kind is list:
            example[field] = _string_list(value, where, field)
        elif kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise UserError(f"{where}: field '{field}' must be an integer index, got {value!r:.60}")
        elif not isinstance(value, str):
            raise UserError(f"{where}: field '{field}' must be a string, got {type(value).__name__} {value!r:.60}")
        else:
            example[field] = value.strip()
    for field in _OPTIONAL_LISTS.get(task_type, ()):
        if field in record:
            example[field] = _string_list(record[field], where, field)
    options = {"multiple_choice": "choices", "schema": "context_options"}.get(task_type)
    if options and not 0 <= example["gold"] < len(example[options]):
        raise UserError(f"{where}: field 'gold' is {example['gold']}, out of range for {len(example[options])} "
                        f"{options} (0 to {len(example[options]) - 1})")
    return example


def read_examples(uri: str, task_type: str) -> list[dict]:
    """The examples of the jsonl file at `uri`, in file order; blank lines are skipped."""
    if task_type not in _FORMATS:  # the config schema refuses this first; a direct caller may not have
        raise UserError(f"{uri}: unknown icl_task_type '{task_type}'; choose one of: {', '.join(_FORMATS)}")
    examples = []
    for n, line in enumerate(_read_text(uri).splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{uri}:{n}: not valid JSON ({err.msg}); write one JSON object per line") from None
        examples.append(_checked(record, task_type, f"{uri}:{n}"))
    if not examples:
        raise UserError(f"{uri}: the task file has no examples; write one JSON object per line")
    return examples
