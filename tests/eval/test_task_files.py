"""Task files and task configs: the prompts built from them (llm-foundry's layout, few-shot drawn by seed,
never the scored example), and every mistake as one line naming the file, the line and the field."""
import pytest

from llmtrain.builders import load_config
from llmtrain.data.tokenizer import NEOX_NAME, build_tokenizer, install_tokenizers
from llmtrain.errors import UserError
from llmtrain.eval.prompts import PromptBuilder, fewshot_indices, preamble_text
from llmtrain.eval.task_files import read_examples
from llmtrain.eval.tasks import ICLTaskConfig, load_eval_spec
from tests.eval.tasks import write_jsonl

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def error_of(action) -> str:
    with pytest.raises(UserError) as err:
        action()
    assert "\n" not in str(err.value)
    return str(err.value)


def test_fewshot_draw_is_seeded_and_never_the_example():
    for index in range(6):
        picks = fewshot_indices(6, 5, index, seed=1234)
        assert sorted(picks) == [i for i in range(6) if i != index]  # all the others, in a seeded order
        assert picks == fewshot_indices(6, 5, index, seed=1234)
    draws = {tuple(fewshot_indices(100, 3, 7, seed)) for seed in range(5)}
    assert len(draws) == 5 and all(7 not in d for d in draws)


def test_prompt_layout(tmp_path):
    install_tokenizers()
    tok = build_tokenizer(NEOX_NAME)
    rows = [{"query": f"q{i}", "choices": ["x", "y"], "gold": i % 2} for i in range(3)]
    examples = read_examples(str(write_jsonl(tmp_path / "mc.jsonl", rows)), "multiple_choice")
    task = ICLTaskConfig(label="mc", dataset_uri="", icl_task_type="multiple_choice", prompt_string="Pick:",
                         continuation_delimiter="\nA: ", example_delimiter="\n\n")
    first, second = fewshot_indices(3, 2, 0, 1234)
    assert preamble_text(task, examples, 2, 0) == (f"Pick:\n\nq{first}\nA: {'xy'[first % 2]}"
                                                   f"\n\nq{second}\nA: {'xy'[second % 2]}")
    request = PromptBuilder(task, examples, tok, 64, "mc.jsonl").request(0, 2)
    texts = [tok.decode(s.tokens) for s in request.sequences]
    preamble = preamble_text(task, examples, 2, 0)
    assert texts == [preamble + "\n\nq0\nA: x", preamble + "\n\nq0\nA: y"]
    assert [s.n_scored for s in request.sequences] == [1, 1] and request.gold == 0


def test_context_is_cut_from_the_left(tmp_path):
    tok = build_tokenizer(NEOX_NAME)
    examples = read_examples(str(write_jsonl(tmp_path / "lm.jsonl", [
        {"context": " ".join(["word"] * 50), "continuation": "end"}])), "language_modeling")
    task = ICLTaskConfig(label="lm", dataset_uri="", icl_task_type="language_modeling")
    seq = PromptBuilder(task, examples, tok, 10, "lm.jsonl").request(0, 0).sequences[0]
    assert len(seq.tokens) == 10 and tok.decode(seq.tokens) == " word" * 9 + " end"


@pytest.mark.parametrize("kind, lines, message", [
    ("multiple_choice", ['{"query": "q", "choices": ["a", "b"], "gold": 0}', '{"query": "q", "gold": 1}'],
     "{f}:2: missing field 'choices'; a multiple_choice line needs query, choices, gold"),
    ("multiple_choice", ['{"query": "q", "choices": ["a", "b"], "gold": 2}'],
     "{f}:1: field 'gold' is 2, out of range for 2 choices (0 to 1)"),
    ("schema", ['{"context_options": ["a", "b"], "continuation": "c", "gold": -1}'],
     "{f}:1: field 'gold' is -1, out of range for 2 context_options (0 to 1)"),
    ("language_modeling", ["", "  "], "{f}: the task file has no examples; write one JSON object per line"),
    ("language_modeling", ['{"context": "a", "continuation": 5}'],
     "{f}:1: field 'continuation' must be a string, got int 5"),
    ("question_answering", ['{"context": "a", "answer": "b"}', "{oops"],
     "{f}:2: not valid JSON (Expecting property name enclosed in double quotes); write one JSON object per line"),
    ("question_answering", ['{"context": "a", "answer": "b", "aliases": "c"}'],
     "{f}:1: field 'aliases' must be a non-empty list of strings, got 'c'"),
])
def test_bad_task_file(tmp_path, kind, lines, message):
    path = tmp_path / "task.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert error_of(lambda: read_examples(str(path), kind)) == message.format(f=path)


def test_missing_task_file(tmp_path):
    assert error_of(lambda: read_examples(str(tmp_path / "nope.jsonl"), "schema")) == \
        f"{tmp_path / 'nope.jsonl'}: task file not found; dataset_uri must be a local jsonl file or s3://bucket/key"


def spec_error(tmp_path, text: str) -> str:
    path = tmp_path / "icl.yaml"
    path.write_text(text)
    return error_of(lambda: load_eval_spec(str(path))).replace(str(path), "ICL")


def test_unknown_task_type_names_file_line_and_field(tmp_path):
    text = "icl_tasks:\n- label: a\n  dataset_uri: a.jsonl\n  icl_task_type: multiple_choise\n"
    assert spec_error(tmp_path, text) == \
        ("ICL:4: icl_tasks[0].icl_task_type: 'multiple_choise' is not allowed (did you mean 'multiple_choice'?); "
         "choose one of: language_modeling, multiple_choice, schema, question_answering")


@pytest.mark.parametrize("text, message", [
    ("icl_tasks:\n- {label: a, dataset_uri: a.jsonl, icl_task_type: schema, num_fewshots: [1]}\n",
     "ICL:2: icl_tasks[0].num_fewshots: unknown key (did you mean 'num_fewshot'?); valid keys here: "
     "continuation_delimiter, dataset_uri, early_stopping_criteria, example_delimiter, fewshot_random_seed, "
     "icl_task_type, label, length_normalize, max_seq_len, num_fewshot, prompt_string"),
    ("icl_tasks:\n- {label: a, icl_task_type: schema}\n",
     "ICL:2: icl_tasks[0].dataset_uri: required key is missing; add it to the YAML or pass "
     "icl_tasks[0].dataset_uri=... on the command line"),
    ("icl_tasks:\n- {label: a, dataset_uri: a.jsonl, icl_task_type: schema, has_categories: true}\n",
     "ICL:2: icl_tasks[0].has_categories: per-category scores are not supported; split the file into one task "
     "per category"),
    ("icl_tasks:\n- {label: a, dataset_uri: a.jsonl, icl_task_type: schema}\n"
     "- {label: a, dataset_uri: b.jsonl, icl_task_type: schema}\n",
     "ICL: icl_tasks[1].label: 'a' is used by icl_tasks[0] too; labels name the metrics (icl/<label>/<n>-shot), "
     "so make them unique"),
    ("icl_tasks:\n- {label: a, dataset_uri: a.jsonl, icl_task_type: schema}\neval_gauntlet:\n  categories:\n"
     "  - {name: c, benchmarks: [{name: a, num_fewshot: 5, random_baseline: 0.5}]}\n",
     "ICL: eval_gauntlet.categories[0].benchmarks[0]: no icl_tasks entry has label 'a' with 5 in num_fewshot; "
     "known: a/0-shot"),
])
def test_bad_task_config(tmp_path, text, message):
    assert spec_error(tmp_path, text) == message


def test_recipe_icl_tasks_from_a_file_and_inline(tmp_path):
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text("icl_tasks:\n- label: a\n  dataset_uri: a.jsonl\n  icl_task_type: schema\n  num_fewshot: [0, 1]\n")
    cfg = load_config(ROOT / "yamls" / "tiny.yaml", [f"icl_tasks={tasks}"])
    assert [(t.label, t.num_fewshot) for t in cfg.icl_tasks] == [("a", [0, 1])]
    assert cfg.recorded()["icl_tasks"][0]["icl_task_type"] == "schema"  # config.yaml records the tasks themselves
    message = error_of(lambda: load_config(ROOT / "yamls" / "tiny.yaml",
                                           ["icl_tasks=[{label: a, dataset_uri: a.jsonl, icl_task_type: lm}]"]))
    assert message.startswith("icl_tasks[0].icl_task_type: 'lm' is not allowed")


def test_eval_script_reports_a_bad_task_file_in_one_line(tmp_path):
    """Before any model is read: MODEL does not even exist here."""
    import os
    import subprocess
    import sys

    (tmp_path / "empty.jsonl").write_text("\n")
    (tmp_path / "icl.yaml").write_text(f"icl_tasks:\n- {{label: e, dataset_uri: {tmp_path / 'empty.jsonl'}, "
                                       "icl_task_type: language_modeling}\n")
    done = subprocess.run([sys.executable, "scripts/eval.py", str(tmp_path / "no-model"), str(tmp_path / "icl.yaml")],
                          cwd=ROOT, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, capture_output=True, text=True)
    # torch 2.14 logs two W-prefixed deprecation lines on import (as for every script on this stack)
    lines = [line for line in done.stderr.splitlines() if not line.startswith("W1")]
    assert (done.returncode, lines) == (2, [f"error: {tmp_path / 'empty.jsonl'}: the task file has no examples; "
                                            "write one JSON object per line"])
