"""Outcomes from per-sequence results, and the gauntlet's averages, as llm-foundry defines them."""
import math

import pytest

from llmtrain.data.tokenizer import NEOX_NAME, build_tokenizer, install_tokenizers
from llmtrain.eval.metrics import gauntlet_scores, normalize_answer, outcome
from llmtrain.eval.prompts import Request, Sequence
from llmtrain.eval.scoring import Scored
from llmtrain.eval.tasks import GauntletBenchmark, GauntletCategory, GauntletConfig


def test_multiple_choice_sum_or_mean_per_token():
    request = Request(0, [Sequence([1, 2], 1), Sequence([1, 2, 3, 4], 3)], gold=1)
    results = [Scored(-2.0, 1, False), Scored(-3.0, 3, False)]  # the long choice: lower sum, higher mean
    assert outcome("multiple_choice", request, results).choice == 0
    normalized = outcome("schema", request, results, length_normalize=True)
    assert (normalized.choice, normalized.correct, normalized.log_likelihoods) == (1, True, (-2.0, -3.0))


def test_question_answering_prefix_rule_stops_and_eos():
    install_tokenizers()
    tok = build_tokenizer(NEOX_NAME)
    assert normalize_answer("  The Eiffel_Tower!  ") == "eiffel tower"
    request = Request(0, [Sequence([1], 0)], answers=("Paris", "City of Light"))

    def judged(text: str, stops=("\n",)) -> bool:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        return outcome("question_answering", request, [Scored(0.0, 0, False, ids)], tokenizer=tok, stops=stops).correct

    assert judged(" paris, france") and judged(" The city of light\nQ: next")
    assert not judged(" Lyon\nParis") and not judged(" Par")
    eos = tok.eos_token_id
    rome, paris = (tok(text, add_special_tokens=False)["input_ids"] for text in (" Rome", " Paris"))
    ids = [*rome, eos, *paris]  # the answer after EOS does not count
    assert not outcome("question_answering", request, [Scored(0.0, 0, False, ids)], tokenizer=tok).correct


def gauntlet(weighting: str, subtract: bool = True, rescale: bool = True) -> GauntletConfig:
    return GauntletConfig(weighting=weighting, subtract_random_baseline=subtract, rescale_accuracy=rescale, categories=[
        GauntletCategory("a", [GauntletBenchmark("x", 0, 0.25), GauntletBenchmark("y", 5, 0.5)]),
        GauntletCategory("b", [GauntletBenchmark("z", 0, 0.0)])])


@pytest.mark.parametrize("weighting, rescale, subtract, want_a", [
    ("EQUAL", True, True, ((0.55 - 0.25) / 0.75 + (0.8 - 0.5) / 0.5) / 2),
    ("EQUAL", False, True, ((0.55 - 0.25) + (0.8 - 0.5)) / 2),
    ("EQUAL", False, False, (0.55 + 0.8) / 2),
    ("SAMPLE_SZ", True, True, ((0.55 - 0.25) / 0.75 * 100 + (0.8 - 0.5) / 0.5 * 4) / 104),
    ("LOG_SAMPLE_SZ", True, True,
     ((0.55 - 0.25) / 0.75 * math.log2(100) + (0.8 - 0.5) / 0.5 * 2) / (math.log2(100) + 2)),
])
def test_gauntlet_weighting(weighting, rescale, subtract, want_a):
    accuracies = {"x/0-shot": 0.55, "y/5-shot": 0.8, "z/0-shot": 0.1}
    counts = {"x/0-shot": 100, "y/5-shot": 4, "z/0-shot": 10}
    scores = gauntlet_scores(gauntlet(weighting, subtract, rescale), accuracies, counts)
    assert scores["a"] == pytest.approx(want_a)
    assert scores["b"] == pytest.approx(0.1)
    assert scores["average"] == pytest.approx((want_a + 0.1) / 2)
