"""Small task files for the eval tests, one per task type, written into a test's tmp dir (no task data
from elsewhere), and a tiny exportable MPT on the real gpt-neox-20b tokenizer's vocabulary."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from llmtrain.models.mpt.configuration import MPTConfig
from llmtrain.models.mpt.modeling import MPTForCausalLM

VOCAB = 50432  # gpt-neox-20b's 50277 padded to a multiple of 128, as the recipes use


def tiny_mpt(seed: int = 0, max_seq_len: int = 128) -> MPTForCausalLM:
    """Stock-MPT-compatible (ALiBi, no biases, LayerNorm), so export_hf can write it."""
    torch.manual_seed(seed)
    return MPTForCausalLM(MPTConfig(d_model=64, n_heads=4, n_layers=2, vocab_size=VOCAB, max_seq_len=max_seq_len,
                                    no_bias=True, norm_type="layernorm",
                                    attn_config={"attn_impl": "torch", "alibi": True})).eval()


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_all_types(folder: Path) -> dict[str, Path]:
    """One small file per task type, with answers of different token lengths."""
    words = ["red", "green", "blue sky", "dark yellow fish", "cat", "a very long answer indeed", "dog"]
    return {
        "language_modeling": write_jsonl(folder / "lm.jsonl", [
            {"context": f"The {i}th word is", "continuation": words[i % 7]} for i in range(9)]),
        "multiple_choice": write_jsonl(folder / "mc.jsonl", [
            {"query": f"Question {i}: pick one", "choices": words[i % 3:i % 3 + 3 + i % 2], "gold": i % 3}
            for i in range(9)]),
        "schema": write_jsonl(folder / "schema.jsonl", [
            {"context_options": [f"The {w} barked" for w in words[i % 4:i % 4 + 2]], "continuation": "at night.",
             "gold": i % 2} for i in range(7)]),
        "question_answering": write_jsonl(folder / "qa.jsonl", [
            {"context": f"Q: what colour is item {i}?", "answer": words[i % 7], "aliases": [words[(i + 1) % 7]]}
            for i in range(6)]),
    }


def icl_yaml(path: Path, files: dict[str, Path], shots=(0, 2), extra: str = "") -> Path:
    lines = ["icl_tasks:"]
    for kind, file in files.items():
        lines += [f"- label: {kind}", f"  dataset_uri: {file}", f"  icl_task_type: {kind}",
                  f"  num_fewshot: {list(shots)}", '  continuation_delimiter: "\\nAnswer: "']
        if kind == "question_answering":
            lines.append('  early_stopping_criteria: ["\\n"]')
    path.write_text("\n".join(lines) + "\n" + extra)
    return path
