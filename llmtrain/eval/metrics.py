"""Per-sequence results → one outcome per example → accuracy; and the gauntlet's category averages.

  language_modeling   right when the greedy continuation is the continuation, token for token
  multiple_choice,    the choice is the sequence of highest log-likelihood (per token, with
  schema              length_normalize); right when it is `gold`
  question_answering  right when the generated text, cut at the first early_stopping_criteria string
                      and normalised (lower case, no punctuation, articles or extra spaces), starts
                      with a normalised answer or alias (llm-foundry's rule)

The gauntlet follows llm-foundry's: a benchmark's score is its accuracy minus `random_baseline`
(rescaled by 1 / (1 - random_baseline) when `rescale_accuracy`), a category's score the weighted
mean of its benchmarks' (EQUAL: 1 each; SAMPLE_SZ: the example count; LOG_SAMPLE_SZ:
max(log2 count, 1)), and `average` the mean of the categories'.
"""
from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass
from typing import Optional

from llmtrain.eval.prompts import Request
from llmtrain.eval.scoring import Scored
from llmtrain.eval.tasks import GauntletConfig


@dataclass(frozen=True)
class Outcome:
    index: int
    correct: bool
    log_likelihoods: tuple[float, ...]   # one per sequence (empty for question_answering)
    choice: Optional[int] = None         # multiple_choice / schema
    generated: Optional[str] = None      # question_answering


_PUNCTUATION = set(string.punctuation) | {"‘", "’", "´", "`"}


def normalize_answer(text: str) -> str:
    text = text.replace("_", " ").lower()
    text = "".join(" " if ch in _PUNCTUATION else ch for ch in text)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _answer_text(text: str, stops: list[str]) -> str:
    for stop in stops:
        text = text.split(stop)[0]
    return text


def outcome(task_type: str, request: Request, results: list[Scored], *, length_normalize: bool = False,
            tokenizer=None, stops: list[str] = ()) -> Outcome:
    """The outcome of one example from the results of its sequences (`tokenizer`: question_answering)."""
    lls = tuple(r.log_likelihood for r in results)
    if task_type == "language_modeling":
        return Outcome(request.index, results[0].greedy_match, lls)
    if task_type == "question_answering":
        tokens = results[0].generated
        if tokenizer.eos_token_id in tokens:  # generation ends at EOS, as generate() stops there
            tokens = tokens[:tokens.index(tokenizer.eos_token_id)]
        text = tokenizer.decode(tokens)
        answer = normalize_answer(_answer_text(text, list(stops)))
        right = any(answer.startswith(normalize_answer(a)) for a in request.answers)
        return Outcome(request.index, right, (), generated=text)
    values = [r.log_likelihood / r.n_tokens for r in results] if length_normalize else list(lls)
    choice = max(range(len(values)), key=values.__getitem__)  # the first of equals, like argmax
    return Outcome(request.index, choice == request.gold, lls, choice=choice)


def accuracy(outcomes: list[Outcome]) -> float:
    return sum(o.correct for o in outcomes) / len(outcomes)


def gauntlet_scores(gauntlet: GauntletConfig, accuracies: dict[str, float], counts: dict[str, int]) -> dict[str, float]:
    """{category: score, ..., 'average': mean of them}; keys of `accuracies` / `counts` are
    '<label>/<n>-shot'. Every benchmark is scored (config validation checked each names a task)."""
    scores = {}
    for category in gauntlet.categories:
        weighted, total_weight = 0.0, 0.0
        for bench in category.benchmarks:
            key = f"{bench.name}/{bench.num_fewshot}-shot"
            score = accuracies[key]
            if gauntlet.subtract_random_baseline:
                score -= bench.random_baseline
                if gauntlet.rescale_accuracy:
                    score /= 1.0 - bench.random_baseline
            weight = {"EQUAL": 1.0, "SAMPLE_SZ": float(counts[key]),
                      "LOG_SAMPLE_SZ": max(math.log2(max(counts[key], 1)), 1.0)}[gauntlet.weighting]
            weighted += score * weight
            total_weight += weight
        scores[category.name] = weighted / total_weight
    scores["average"] = sum(scores.values()) / len(scores) if scores else 0.0
    return scores
