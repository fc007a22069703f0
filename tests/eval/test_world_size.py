"""The world size does not change the score: 1 and 2 ranks (gloo, FSDP2, inside Composer's Trainer) score
every example exactly once and agree on each example and on the logged accuracies (icl_ranks.py); and
scripts/eval.py's path on the 2-rank run's sharded checkpoint scores the same."""
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from llmtrain.data.tokenizer import install_tokenizers
from llmtrain.eval.evaluator import evaluate, load_tasks
from llmtrain.eval.tasks import load_eval_spec
from llmtrain.models.sources import load_model
from tests.checkpoint.harness import SUBPROCESS_ENV, launcher
from tests.eval.tasks import icl_yaml, write_all_types

SCRIPT = Path(__file__).with_name("icl_ranks.py")


def run(ranks: int, icl: Path, out: Path) -> tuple[dict, dict]:
    out.mkdir()
    proc = subprocess.run([*launcher(ranks), str(SCRIPT), str(icl), str(out)], cwd=out,
                          env={**os.environ, **SUBPROCESS_ENV}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = {k: v for r in records for k, v in r.items() if k.startswith("icl/")}
    return json.loads((out / "outcomes.json").read_text()), logged


@pytest.mark.slow
def test_one_and_two_ranks_score_alike(tmp_path):
    install_tokenizers()
    files = write_all_types(tmp_path)
    icl = icl_yaml(tmp_path / "icl.yaml", files, shots=(1,))
    one, logged_one = run(1, icl, tmp_path / "one")
    two, logged_two = run(2, icl, tmp_path / "two")
    sizes = {"language_modeling": 9, "multiple_choice": 9, "schema": 7, "question_answering": 6}
    assert sorted(one) == sorted(two) == sorted(f"{k}/1" for k in sizes)  # each task at 1 shot
    for key, outcomes in one.items():
        assert [o["index"] for o in two[key]] == list(range(sizes[key.split("/")[0]]))  # each example once
        assert [o["correct"] for o in two[key]] == [o["correct"] for o in outcomes], key
        assert [o["choice"] for o in two[key]] == [o["choice"] for o in outcomes], key
        assert [o["generated"] for o in two[key]] == [o["generated"] for o in outcomes], key
        for a, b in zip(outcomes, two[key]):
            assert a["log_likelihoods"] == pytest.approx(b["log_likelihoods"], abs=1e-4)
    assert sorted(logged_one) == sorted(f"icl/{k}/1-shot" for k in sizes)
    assert logged_one == logged_two
    assert logged_one["icl/multiple_choice/1-shot"] == pytest.approx(
        sum(o["correct"] for o in one["multiple_choice/1"]) / 9)

    model, tokenizer, max_seq_len = load_model(str(tmp_path / "two" / "checkpoints" / "ep0-ba1"))
    tasks = load_tasks(load_eval_spec(str(icl)).icl_tasks, tokenizer, max_seq_len)
    for result in evaluate(model, tasks, tokenizer, 5, torch.device("cpu")):
        ranks = two[f"{result.label}/{result.num_fewshot}"]
        assert [(o.correct, o.choice, o.generated) for o in result.outcomes] == \
            [(o["correct"], o["choice"], o["generated"]) for o in ranks]
        for a, b in zip(result.outcomes, ranks):
            assert a.log_likelihoods == pytest.approx(b["log_likelihoods"], abs=1e-4)
