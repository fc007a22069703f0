"""Examples/s of in-context-learning evaluation on a preset's model: the path scripts/eval.py runs
(`llmtrain.eval.evaluator.evaluate` under bf16 autocast on a GPU), on a random-init model and generated
task files, so it needs no checkpoint and no task data.

    python benchmarks/bench_eval.py --preset 1b                       # one GPU: yamls/mpt-1b.yaml's model
    python benchmarks/bench_eval.py --preset tiny --examples 24       # CPU smoke run: yamls/tiny.yaml's model

Tasks, shaped like the gauntlet's (words drawn from a fixed list, seeded): `lm` (LAMBADA-like: ~70-word
context, one-word continuation), `mc` (HellaSwag-like: ~40-word context, 4 endings of ~15 words), `schema`
(Winograd-like: 2 context options, a shared continuation), `qa` (greedy generation of a short answer;
optional, --tasks lm,mc,schema,qa). Each at every --shots count, after an untimed warm-up on a few
examples. Prints one JSON line: examples/s over all tasks and per task, sequences/s, peak memory.
"""
from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from llmtrain.data.tokenizer import NEOX_NAME, build_tokenizer
from llmtrain.eval.evaluator import evaluate, evaluate_task, load_tasks
from llmtrain.eval.tasks import ICLTaskConfig
from llmtrain.models import build_composer_mpt
from measure import RECIPES, peak_mem_gib

WORDS = ("time year people way day man thing woman life child world school state family student group "
         "country problem hand part place case week company system program question work government number "
         "night point home water room mother area money story fact month lot right study book eye job word "
         "business issue side kind head house service friend father power hour game line end member law car "
         "city community name president team minute idea kid body information back parent face others level "
         "office door health person art war history party result change morning reason research girl guy").split()


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def write_tasks(folder: Path, kinds: list[str], n: int, shots: list[int], seed: int = 0) -> list[ICLTaskConfig]:
    rng = random.Random(seed)
    rows = {
        "lm": ("language_modeling", lambda: {"context": _text(rng, 70), "continuation": rng.choice(WORDS)}),
        "mc": ("multiple_choice", lambda: {"query": _text(rng, 40), "choices": [_text(rng, 15) for _ in range(4)],
                                           "gold": rng.randrange(4)}),
        "schema": ("schema", lambda: {"context_options": [_text(rng, 15) for _ in range(2)],
                                      "continuation": _text(rng, 8), "gold": rng.randrange(2)}),
        "qa": ("question_answering", lambda: {"context": _text(rng, 30) + "?", "answer": _text(rng, 2)}),
    }
    tasks = []
    for kind in kinds:
        task_type, row = rows[kind]
        path = folder / f"{kind}.jsonl"
        path.write_text("".join(json.dumps(row()) + "\n" for _ in range(n)))
        tasks.append(ICLTaskConfig(label=kind, dataset_uri=str(path), icl_task_type=task_type, num_fewshot=shots))
    return tasks


def build_model(preset: str, device: torch.device):
    recipe = RECIPES / ("tiny.yaml" if preset == "tiny" else f"mpt-{preset}.yaml")
    section = OmegaConf.to_container(OmegaConf.load(recipe), resolve=True)["model"]
    section = {k: v for k, v in section.items() if k != "name"}
    torch.manual_seed(0)
    return build_composer_mpt({**section, "init_device": "cpu"}).model.to(device).eval(), section["max_seq_len"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="1b", help="tiny, 125m, 350m, 760m, 1b, 3b, 7b")
    p.add_argument("--examples", type=int, default=500, help="examples per task")
    p.add_argument("--shots", default="0,5", help="few-shot counts, comma-separated")
    p.add_argument("--tasks", default="lm,mc,schema", help="of lm, mc, schema, qa")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per forward pass")
    p.add_argument("--device", default=None, help="default: cuda when there is a GPU")
    args = p.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    shots = [int(s) for s in args.shots.split(",")]
    tokenizer = build_tokenizer(NEOX_NAME)
    model, max_seq_len = build_model(args.preset, device)
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        kinds = args.tasks.split(",")
        warmup = load_tasks(write_tasks(Path(tmp), kinds, 2 * args.batch_size, shots, seed=1), tokenizer, max_seq_len)
        tasks = load_tasks(write_tasks(Path(tmp), kinds, args.examples, shots), tokenizer, max_seq_len)
    per_task = {}
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        evaluate(model, warmup, tokenizer, args.batch_size, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        for task in tasks:
            for n in shots:
                start = time.perf_counter()
                evaluate_task(model, task, n, tokenizer, args.batch_size, device)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                per_task[f"{task.config.label}/{n}-shot"] = {"seconds": time.perf_counter() - start,
                                                             "sequences": args.examples * _sequences(task)}
    seconds = sum(t["seconds"] for t in per_task.values())
    examples = args.examples * len(per_task)
    print(json.dumps({
        "bench": "eval", "preset": args.preset, "device": torch.cuda.get_device_name() if device.type == "cuda"
        else "cpu", "batch_size": args.batch_size, "examples": examples, "seconds": round(seconds, 3),
        "examples_per_sec": round(examples / seconds, 2),
        "sequences_per_sec": round(sum(t["sequences"] for t in per_task.values()) / seconds, 2),
        "per_task_examples_per_sec": {k: round(args.examples / t["seconds"], 2) for k, t in per_task.items()},
        "peak_mem_gib": round(peak_mem_gib(), 2) if device.type == "cuda" else None}))


def _sequences(task) -> int:
    """Forward-pass rows per example: one per choice or context option, else one."""
    example = task.prompts.examples[0]
    return len(example.get("choices") or example.get("context_options") or [None])


if __name__ == "__main__":
    main()
