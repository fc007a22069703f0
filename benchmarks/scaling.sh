#!/usr/bin/env bash
# Per-GPU throughput of a preset on 1, 2, ... GPUs of one machine, one run after the other (docs/performance.md).
#   source benchmarks/device_env.sh && bash benchmarks/scaling.sh PRESET MICROBATCH "1 2 4" [override ...]
# Results: one JSON line per run in ${OUT:-/tmp}/scaling.jsonl, each run's full log beside it; a run that
# fails or exceeds $RUN_LIMIT_S (default 240) is reported and the next one still runs.
preset=$1 microbatch=$2 gpu_counts=$3
shift 3
out=${OUT:-/tmp}
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/inductor}  # later runs reuse compiled kernels
for n in $gpu_counts; do
  log=$out/$preset-mb$microbatch-$n-gpu.log
  echo "== $preset, micro-batch $microbatch, $n GPU(s) $*"
  if CUDA_VISIBLE_DEVICES=$(seq -s, 0 $((n - 1))) timeout "${RUN_LIMIT_S:-240}" \
      python3 -m composer.cli.launcher -n "$n" benchmarks/bench_train.py --preset "$preset" \
      --microbatch "$microbatch" --steps "${STEPS:-8}" --warmup "${WARMUP:-6}" --skip-baseline \
      --json "$out/scaling.jsonl" "$@" >"$log" 2>&1; then
    grep -A3 "^run " "$log"
  else
    echo "failed (exit $?), last lines of $log:"; tail -5 "$log"
  fi
done
