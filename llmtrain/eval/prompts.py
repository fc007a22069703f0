"""Examples → few-shot prompts → the token sequences a model scores, as llm-foundry builds them.

A prompt is `prompt_string`, then `num_fewshot` solved examples, then the example to score; each
example after the first text starts with `example_delimiter` and reads
`{context}{continuation_delimiter}{answer}`. The scored example's text is right-stripped (a prompt
ending in a space makes a BPE model predict badly) and its continuation gets a leading space instead,
for tokenizers that carry spaces on the next word (gpt-neox-20b's). Prompt and example are
tokenized separately and joined, as llm-foundry does, so token boundaries match its numbers.

Few-shot examples for example i are drawn from the other examples of the file by a generator seeded
with (fewshot_random_seed, i): deterministic, never example i itself, and buildable for any subset of
examples (each rank builds only its share). The context is cut from the left so that context +
continuation fit `max_seq_len`.

  language_modeling   one sequence: context → continuation
  multiple_choice     one sequence per choice: query → choice
  schema              one sequence per context option: option → continuation
  question_answering  one prompt, generated from for up to `max_new_tokens` tokens
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from llmtrain.errors import UserError
from llmtrain.eval.tasks import ICLTaskConfig


@dataclass(frozen=True)
class Sequence:
    tokens: list[int]      # context then continuation
    n_scored: int          # how many trailing tokens are the continuation (0: a generation prompt)


@dataclass(frozen=True)
class Request:
    """One example at one few-shot count: what to run, and what a right answer is."""
    index: int                  # the example's position in its file (0-based)
    sequences: list[Sequence]
    gold: int = 0               # multiple_choice / schema: the index of the right sequence
    answers: tuple[str, ...] = ()   # question_answering: the answer and its aliases


def _solved(task_type: str, example: dict) -> tuple[str, str]:
    """(context, answer) of an example shown solved among the few-shot examples."""
    if task_type == "multiple_choice":
        return example["query"], example["choices"][example["gold"]]
    if task_type == "schema":
        return example["context_options"][example["gold"]], example["continuation"]
    if task_type == "question_answering":
        return example["context"], example["answer"]
    return example["context"], example["continuation"]


def fewshot_indices(n_examples: int, num_fewshot: int, index: int, seed: int) -> list[int]:
    """`num_fewshot` distinct indices other than `index` (fewer when the file is that small)."""
    rng = random.Random(seed * 1_000_003 + index)
    picks = rng.sample(range(n_examples - 1), min(num_fewshot, n_examples - 1))
    return [p + 1 if p >= index else p for p in picks]  # skip `index` itself


def preamble_text(task: ICLTaskConfig, examples: list[dict], num_fewshot: int, index: int) -> str:
    text = task.prompt_string
    for j in fewshot_indices(len(examples), num_fewshot, index, task.fewshot_random_seed):
        context, answer = _solved(task.icl_task_type, examples[j])
        text += f"{task.example_delimiter if text else ''}{context}{task.continuation_delimiter}{answer}"
    return text


class PromptBuilder:
    """Tokenized requests for one task file; `where` (the file) names the example in errors."""

    def __init__(self, task: ICLTaskConfig, examples: list[dict], tokenizer, max_seq_len: int, where: str):
        self.task, self.examples, self.tokenizer, self.where = task, examples, tokenizer, where
        self.max_seq_len = task.max_seq_len or max_seq_len
        self.prefix_space = len(self._ids(" a")) == 1  # BPE tokenizers that fold the space into the word
        self.max_new_tokens = self._longest_answer() if task.icl_task_type == "question_answering" else 0

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def _continuation(self, text: str) -> list[int]:
        return self._ids(f" {text}" if self.prefix_space and not text.startswith(" ") else text)

    def _longest_answer(self) -> int:
        return max(len(self._continuation(a)) for e in self.examples for a in [e["answer"], *e.get("aliases", [])])

    def _sequence(self, preamble: list[int], context: str, continuation: list[int], index: int) -> Sequence:
        context_ids = preamble + self._ids(context.rstrip())
        room = self.max_seq_len - max(len(continuation), self.max_new_tokens)
        if room < 1:
            raise UserError(f"{self.where}:{index + 1}: the answer ({max(len(continuation), self.max_new_tokens)} "
                            f"tokens) leaves no room for context in max_seq_len {self.max_seq_len}; raise "
                            f"icl_tasks[].max_seq_len or shorten it")
        if not context_ids:
            raise UserError(f"{self.where}:{index + 1}: the context is empty, so the first answer token has nothing "
                            "to be predicted from; give the example a context or set prompt_string")
        return Sequence(context_ids[-room:] + continuation, len(continuation))

    def request(self, index: int, num_fewshot: int) -> Request:
        task, example = self.task, self.examples[index]
        preamble = preamble_text(task, self.examples, num_fewshot, index)
        ids = self._ids(preamble)
        lead = task.example_delimiter if preamble else ""
        kind = task.icl_task_type
        if kind == "language_modeling":
            text = f"{lead}{example['context']}{task.continuation_delimiter}"
            return Request(index, [self._sequence(ids, text, self._continuation(example["continuation"]), index)])
        if kind == "multiple_choice":
            text = f"{lead}{example['query']}{task.continuation_delimiter}"
            return Request(index, [self._sequence(ids, text, self._continuation(c), index) for c in example["choices"]],
                           gold=example["gold"])
        if kind == "schema":
            continuation = self._continuation(example["continuation"])
            texts = [f"{lead}{option}{task.continuation_delimiter}" for option in example["context_options"]]
            return Request(index, [self._sequence(ids, text, continuation, index) for text in texts],
                           gold=example["gold"])
        text = f"{lead}{example['context']}{task.continuation_delimiter}"
        return Request(index, [self._sequence(ids, text, [], index)],
                       answers=(example["answer"], *example.get("aliases", [])))
