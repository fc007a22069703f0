# Source at the start of a GPU-machine command (see docs/performance.md):
#   carry [".whl", ".device"]; command: source benchmarks/device_env.sh && python3 benchmarks/...
# .whl: ../shared/device/fetch_wheels.sh (Composer, streaming, ... for the machine's Python 3.12);
# .device/tokenizers: a copy of $LLMTRAIN_CACHE/tokenizers (the machine has no network to install it).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || return 1
export PYTHONPATH=/tmp/site:$PWD LLMTRAIN_CACHE=$PWD/.device PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader
python3 -c 'import torch, triton, transformers; print("torch", torch.__version__, "triton", triton.__version__, "transformers", transformers.__version__)'
