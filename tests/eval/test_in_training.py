"""The recipe path end to end, in this process: yamls/tiny.yaml (shrunk, synthetic data) with `icl_tasks:` and
`eval_gauntlet:` given as files, one task file on the S3 test server; the scores land in metrics.jsonl every
eval_interval and in report.png, and scripts/eval.py on the run's last checkpoint prints the same accuracies."""
import importlib.util
import json
from pathlib import Path

import pytest

from llmtrain.builders import load_config
from llmtrain.data.tokenizer import install_tokenizers
from llmtrain.loggers.report import plot_run
from llmtrain.train import train
from tests.eval.tasks import write_all_types

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["model.d_model=32", "model.n_heads=2", "model.n_layers=1", "variables.max_seq_len=64",
         "global_train_batch_size=2", "device_train_microbatch_size=2", "~train_loader",
         "train_loader={name: synthetic, max_seq_len: 64}", "~callbacks", "log_to_console=false", "device=cpu"]
GAUNTLET = """eval_gauntlet:
  categories:
  - name: choices
    benchmarks:
    - {name: mc, num_fewshot: 1, random_baseline: 0.3}
    - {name: wino, num_fewshot: 1, random_baseline: 0.5}
"""


def eval_script():
    spec = importlib.util.spec_from_file_location("eval_script", ROOT / "scripts" / "eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_recipe_scores_every_interval_and_eval_script_agrees(tmp_path, s3_server, capsys):
    install_tokenizers()
    files = write_all_types(tmp_path)
    bucket = s3_server.make_bucket("icl")
    s3_server.client().upload_file(str(files["multiple_choice"]), bucket, "tasks/mc.jsonl")
    (tmp_path / "tasks.yaml").write_text(f"""icl_tasks:
- {{label: mc, dataset_uri: s3://{bucket}/tasks/mc.jsonl, icl_task_type: multiple_choice, num_fewshot: [0, 1]}}
- {{label: wino, dataset_uri: {files['schema']}, icl_task_type: schema, num_fewshot: [1]}}
- {{label: qa, dataset_uri: {files['question_answering']}, icl_task_type: question_answering, num_fewshot: [1]}}
""")
    (tmp_path / "gauntlet.yaml").write_text(GAUNTLET)
    run = tmp_path / "run"
    cfg = load_config(ROOT / "yamls" / "tiny.yaml", [
        *SMALL, "max_duration=4ba", "eval_interval=2ba", f"icl_tasks={tmp_path / 'tasks.yaml'}",
        f"eval_gauntlet={tmp_path / 'gauntlet.yaml'}", f"run_dir={run}", f"save_folder={run / 'checkpoints'}",
        "save_interval=4ba"])
    train(cfg)

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    keys = ["icl/mc/0-shot", "icl/mc/1-shot", "icl/wino/1-shot", "icl/qa/1-shot", "icl/gauntlet/choices",
            "icl/gauntlet/average"]
    scored = {r["step"]: {k: r[k] for k in keys} for r in records if "icl/mc/0-shot" in r}
    assert sorted(scored) == [2, 4]  # every eval_interval, and at the end
    last = scored[4]
    want = ((last["icl/mc/1-shot"] - 0.3) / 0.7 + (last["icl/wino/1-shot"] - 0.5) / 0.5) / 2
    assert last["icl/gauntlet/choices"] == pytest.approx(want) == last["icl/gauntlet/average"]
    assert "icl" in plot_run(run).panels

    capsys.readouterr()
    eval_script().main([str(run), str(tmp_path / "tasks.yaml"), "--json", str(tmp_path / "eval.json"),
                        "--batch-size", "5"])
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split() == ["task", "shots", "accuracy", "examples"]
    assert "mc" in printed and "examples/s" in printed
    from_script = {f"icl/{t['label']}/{t['num_fewshot']}-shot": t["accuracy"]
                   for t in json.loads((tmp_path / "eval.json").read_text())["tasks"]}
    assert from_script == {k: v for k, v in last.items() if "gauntlet" not in k}
