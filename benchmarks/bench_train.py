"""Training throughput of a preset through the real training path, against HF MptForCausalLM.

    python benchmarks/bench_train.py --preset 1b --microbatch 8                 # 1 GPU
    composer -n 4 benchmarks/bench_train.py --preset 7b --microbatch 4 --skip-baseline

Ours: yamls/mpt-<preset>.yaml with the data swapped for synthetic tokens, built and run by
`llmtrain.train.build_trainer` (Composer Trainer, our MPT, LION, FSDP2 when >1 GPU). Baseline, in the
same process: stock `transformers.MptForCausalLM` of the same shape, amp bf16, fused AdamW, plain loop.
Prints tokens/s/GPU, MFU (tokens/s x (6N + 12·L·d·s) / peak, as llm-foundry counts) and peak memory.
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import time

import torch
import yaml
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist

import gaps
from llmtrain.builders import config_from_dict
from llmtrain.train import build_trainer
from measure import RECIPES, append_json, kernel_times, mfu, peak_mem_gib, print_profile, top_kernels

TRACED_STEPS = 2  # --trace: the Python tracer slows the host, so these steps are not timed


class StepProfiler(Callback):
    """CUDA kernel time of a few steps, by group (attention / matmul / optimizer / other). With `trace`
    (a path ending .json.gz), host activity and Python stacks too, written there as a Chrome trace, and
    the GPU's idle gaps summarised (gaps.py); the Python tracer slows the host, so time those steps apart."""

    def __init__(self, start: int, steps: int, trace: str | None = None):
        self.start, self.stop = start, start + steps
        self.trace = trace
        self.profiler = None
        self.groups: dict[str, float] = {}
        self.kernels: dict[str, float] = {}
        self.gaps = ""

    def batch_start(self, state: State, logger: Logger) -> None:
        if int(state.timestamp.batch) == self.start:
            activities = [torch.profiler.ProfilerActivity.CUDA]
            if self.trace:
                activities.append(torch.profiler.ProfilerActivity.CPU)
            self.profiler = torch.profiler.profile(activities=activities, with_stack=bool(self.trace))
            self.profiler.__enter__()

    def batch_end(self, state: State, logger: Logger) -> None:
        if self.profiler is not None and int(state.timestamp.batch) == self.stop:
            torch.cuda.synchronize()
            self.profiler.__exit__(None, None, None)
            self.groups, self.kernels = kernel_times(self.profiler, self.stop - self.start)
            if self.trace:
                self.profiler.export_chrome_trace(self.trace)
                self.gaps = gaps.summarise(gaps.load(self.trace), self.stop - self.start, top=15, min_us=20)
            self.profiler = None


class StepTimer(Callback):
    """Wall time of each training batch (Composer syncs the device when it logs the loss)."""

    def __init__(self):
        self.times: list[float] = []
        self._start = 0.0

    def batch_start(self, state: State, logger: Logger) -> None:
        self._start = time.perf_counter()

    def batch_end(self, state: State, logger: Logger) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self._start)


def run_ours(args) -> dict:
    recipe = yaml.safe_load((RECIPES / f"mpt-{args.preset}.yaml").read_text())
    world = dist.get_world_size()
    recipe.update(
        # Workers, as the recipes' loaders have: the random rows are made off the training thread.
        train_loader={"name": "synthetic", "max_seq_len": args.seq, "docs_per_row": args.docs_per_row, "num_workers": 2},
        max_duration=f"{args.warmup + args.steps}ba",
        global_train_batch_size=args.microbatch * args.accum * world,
        device_train_microbatch_size=args.microbatch,
        save_folder=None, autoresume=False, loggers={}, callbacks={}, eval_loader=None,
        run_name=f"bench-{args.preset}", run_dir=f"/tmp/bench-{args.preset}", console_log_interval="1000ba",
    )
    recipe["compile_config"] = {} if args.compile else None  # the presets compile; --no-compile measures without
    cfg = config_from_dict(recipe, args.override, source=f"mpt-{args.preset}.yaml")
    trainer = build_trainer(cfg)
    timer = StepTimer()
    trainer.state.callbacks.append(timer)
    profiler = StepProfiler(args.warmup + 1, 3) if args.profile else None
    traced = TRACED_STEPS if args.trace else 0  # the last steps, after the timed ones
    tracer = StepProfiler(args.warmup + args.steps - traced, traced, args.trace) if args.trace else None
    for callback in (profiler, tracer):
        if callback:
            trainer.state.callbacks.append(callback)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.fit()
    timed = timer.times[args.warmup:args.warmup + args.steps - traced]
    step_s = statistics.median(timed)
    tok_s = args.microbatch * args.accum * args.seq / step_s
    model = trainer.state.model
    n_params = getattr(model, "n_params", None) or sum(p.numel() for p in model.parameters())
    m = cfg.model
    result = {"name": "llmtrain", "microbatch": args.microbatch, "tokens_per_sec_per_gpu": tok_s,
              "mfu": mfu(tok_s, n_params, m["n_layers"], m["d_model"], args.seq),
              "peak_mem_gib": peak_mem_gib(), "n_params": n_params, "step_s_median": step_s}
    if profiler:
        result["kernel_ms_per_step"] = profiler.groups
        result["top_kernels_ms_per_step"] = top_kernels(profiler.kernels)
    if tracer:
        result["idle_gaps"] = tracer.gaps
    trainer.close()
    del trainer, model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


def run_hf_baseline(args) -> dict:
    from transformers import MptConfig, MptForCausalLM

    recipe = yaml.safe_load((RECIPES / f"mpt-{args.preset}.yaml").read_text())["model"]
    config = MptConfig(d_model=recipe["d_model"], n_heads=recipe["n_heads"], n_layers=recipe["n_layers"],
                       expansion_ratio=recipe["expansion_ratio"], max_seq_len=args.seq, vocab_size=recipe["vocab_size"],
                       no_bias=True, attn_config={"alibi": True, "alibi_bias_max": 8})
    model = MptForCausalLM(config).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    n_params = sum(p.numel() for p in model.parameters())
    mb = args.baseline_microbatch
    tokens = torch.randint(0, 50277, (args.warmup + args.steps, mb, args.seq), device="cuda")
    torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(args.warmup + args.steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=tokens[i], labels=tokens[i]).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()  # as Composer logs it: one host sync per step
        times.append(time.perf_counter() - start)
    tok_s = mb * args.seq / statistics.median(times[args.warmup:])
    result = {"name": "HF MptForCausalLM", "microbatch": mb, "tokens_per_sec_per_gpu": tok_s,
              "mfu": mfu(tok_s, n_params, config.n_layers, config.d_model, args.seq),
              "peak_mem_gib": peak_mem_gib(), "n_params": n_params}
    del model, opt
    gc.collect()
    torch.cuda.empty_cache()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="1b")
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--microbatch", type=int, default=8)
    parser.add_argument("--accum", type=int, default=1, help="micro-batches per optimizer step")
    parser.add_argument("--baseline-microbatch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--docs-per-row", type=int, default=1)
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--profile", action="store_true", help="kernel time by group over 3 steps after warm-up")
    parser.add_argument("--trace", help="a Chrome trace (.json.gz) of the last 2 steps with host activity, and "
                        "the GPU's idle gaps summarised (benchmarks/gaps.py); those 2 steps are not timed")
    parser.add_argument("--memory-cap-gib", type=float,
                        help="cap this process's GPU memory (e.g. 79 to check that a run fits an 80 GB H100 on an H200)")
    parser.add_argument("--json", help="append the results as one JSON line to this file")
    parser.add_argument("override", nargs="*", help="recipe overrides, e.g. model.attn_config.attn_impl=flex")
    args = parser.parse_args()
    if args.trace and args.steps < (6 if args.profile else 3):  # the traced steps come after the timed and profiled ones
        parser.error("--trace needs --steps of at least 3 (6 with --profile)")

    card = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    if args.memory_cap_gib and torch.cuda.is_available():
        device = int(os.environ.get("LOCAL_RANK", 0))  # the launcher's rank on this machine
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.memory_cap_gib * 2**30 / total), device)
    rank0 = dist.get_global_rank() == 0
    results = []
    # The baseline first, in a clean process: Composer keeps the trained model referenced afterwards.
    if not args.skip_baseline and torch.cuda.is_available() and dist.get_world_size() == 1:
        results.append(run_hf_baseline(args))
        print(f"baseline: {results[-1]}", flush=True)
    results.append(run_ours(args))
    if not rank0:
        return
    print(f"ours: {results[-1]}")
    print(f"\npreset {args.preset}, seq {args.seq}, {dist.get_world_size()} x {card}, "
          f"compile={args.compile}, overrides={args.override}")
    print(f"{'run':20s} {'mb':>3s} {'tok/s/GPU':>10s} {'MFU':>6s} {'peak GiB':>9s}")
    for r in results:
        print(f"{r['name']:20s} {r['microbatch']:3d} {r['tokens_per_sec_per_gpu']:10.0f} "
              f"{100 * r['mfu']:5.1f}% {r['peak_mem_gib']:9.1f}")
    for r in results:
        if "kernel_ms_per_step" in r:
            print_profile(r)
        if "idle_gaps" in r:
            print(f"GPU idle ({r['name']}):\n{r['idle_gaps']}")
    if len(results) == 2:
        print(f"ratio llmtrain / HF: {results[1]['tokens_per_sec_per_gpu'] / results[0]['tokens_per_sec_per_gpu']:.2f}x")
    if args.json:
        append_json(args.json, {"args": vars(args), "card": card, "world": dist.get_world_size(), "results": results})


if __name__ == "__main__":
    main()
