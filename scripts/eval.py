"""Score a model on in-context-learning tasks and print a table:

    python scripts/eval.py MODEL ICL.yaml [--batch-size 16] [--device cuda] [--json out.json]
    composer -n 8 scripts/eval.py MODEL ICL.yaml      # examples split over 8 ranks, each scored once

MODEL: an exported Hugging Face folder (stock transformers MPT loads it), or a Composer checkpoint
(a sharded folder, a .pt, a save folder or a run directory; local or s3://); see llmtrain/models/sources.py.
ICL.yaml holds `icl_tasks:` (a list, or a path) and optionally `eval_gauntlet:`, with llm-foundry's keys
(docs/evaluation.md). --json writes every metric and each example's outcome.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's llmtrain, not an installed one

from llmtrain.cli import run_cli  # noqa: E402
from llmtrain.errors import UserError  # noqa: E402


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/eval.py", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="exported Hugging Face folder, or a Composer checkpoint (.pt, folder, run dir)")
    p.add_argument("tasks", help="YAML file with icl_tasks: (and optionally eval_gauntlet:)")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per forward pass")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when there is a GPU)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default=None, help="default: bf16 on GPU, fp32 on CPU")
    p.add_argument("--config", help="the run's config.yaml, for a checkpoint (default: found beside it)")
    p.add_argument("--tokenizer", help="tokenizer name or folder (default: the model's own)")
    p.add_argument("--json", help="write the metrics and per-example outcomes here")
    args = p.parse_args(argv)
    if args.batch_size < 1:
        raise UserError(f"--batch-size: {args.batch_size} must be at least 1")
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    from llmtrain.eval.task_files import read_examples
    from llmtrain.eval.tasks import load_eval_spec

    # Mistakes in the tasks and their files are reported first, before torch is even imported.
    spec = load_eval_spec(args.tasks)
    examples = [read_examples(task.dataset_uri, task.icl_task_type) for task in spec.icl_tasks]

    import torch
    from composer.utils import dist, get_device

    from llmtrain.eval.evaluator import evaluate, format_table, load_tasks, metric_values
    from llmtrain.models.sources import load_model

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.initialize_dist(get_device("gpu" if device.type == "cuda" else "cpu"))
        if device.type == "cuda":
            device = torch.device("cuda", dist.get_local_rank())
    model, tokenizer, max_seq_len = load_model(args.model, args.config, args.tokenizer)
    tasks = load_tasks(spec.icl_tasks, tokenizer, max_seq_len, examples)
    model.to(device)
    bf16 = (args.precision or ("bf16" if device.type == "cuda" else "fp32")) == "bf16"
    start = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        results = evaluate(model, tasks, tokenizer, args.batch_size, device)
    seconds = time.perf_counter() - start
    values = metric_values(results, spec.eval_gauntlet)
    if dist.get_global_rank() != 0:
        return
    print(format_table(results, values))
    examples = sum(len(r.outcomes) for r in results)
    print(f"{examples} examples in {seconds:.1f} s ({examples / seconds:.1f} examples/s)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "metrics": values, "seconds": seconds,
            "tasks": [{"label": r.label, "num_fewshot": r.num_fewshot, "accuracy": r.accuracy,
                       "outcomes": [asdict(o) for o in r.outcomes]} for r in results]}, indent=1))


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
