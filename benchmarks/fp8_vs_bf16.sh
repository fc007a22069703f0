#!/usr/bin/env bash
# FP8 against bf16 training on the same real tokens and seed, through scripts/train.py:
# yamls/mpt-125m.yaml for STEPS steps on this Python's standard library, one run per precision.
#   OUT=results STEPS=300 bash benchmarks/fp8_vs_bf16.sh [extra overrides]
#   python benchmarks/plot_curves.py results/loss_amp_bf16.jsonl results/loss_amp_fp8.jsonl --out curves.png
set -euo pipefail
STEPS=${STEPS:-300}; SEQ=${SEQ:-2048}; BATCH=${BATCH:-32}; OUT=${OUT:-/tmp/fp8_vs_bf16}; WORK=${WORK:-/tmp/fp8_vs_bf16_work}
mkdir -p "$OUT" "$WORK"
python3 benchmarks/stdlib_corpus.py "$WORK/corpus.jsonl"
python3 scripts/data_prep.py "$WORK/corpus.jsonl" --out "$WORK/shards/stdlib" --tokenizer EleutherAI/gpt-neox-20b \
  --max-seq-len "$SEQ" --workers 8 --overwrite | tail -4
for precision in amp_bf16 amp_fp8; do
  rm -rf "$WORK/cache" "$WORK/runs/$precision"
  python3 scripts/train.py yamls/mpt-125m.yaml "~train_loader.dataset.streams" \
    "train_loader.dataset.streams={stdlib: {remote: $WORK/shards/stdlib, local: $WORK/cache/stdlib}}" \
    variables.max_seq_len="$SEQ" max_duration="${STEPS}ba" global_train_batch_size="$BATCH" \
    device_train_microbatch_size="$BATCH" eval_loader=null autoresume=false save_folder=null "~loggers" \
    train_loader.num_workers=2 console_log_interval=50ba precision="$precision" run_name="curve-$precision" \
    run_dir="$WORK/runs/$precision" "$@" 2>&1 | grep -E "^step|^done|^error|attention:" | tail -8
  cp "$WORK/runs/$precision/metrics.jsonl" "$OUT/loss_$precision.jsonl"
done
