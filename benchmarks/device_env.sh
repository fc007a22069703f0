# Source at the start of a GPU-machine command (see docs/performance.md):
#   carry [".whl", ".device"]; command: source benchmarks/device_env.sh && python3 benchmarks/...
# .whl: ../shared/device/fetch_wheels.sh zstandard==0.25.0 xxhash==3.8.2 (Composer, streaming, ... for the
#   machine's Python 3.12; leave wandb out), plus for FlashAttention-4 (pip download --no-deps --pre):
#   flash-attn-4==4.0.0b40, nvidia-cutlass-dsl==4.8.1, nvidia-cutlass-dsl-libs-base==4.8.1, -libs-core==4.8.1,
#   quack-kernels, apache-tvm-ffi, torch-c-dlpack-ext;
# .device/tokenizers: a copy of $LLMTRAIN_CACHE/tokenizers (the machine has no network to install it).
# FA4's CUDA 13 libraries (nvidia-cutlass-dsl-libs-cu13, a 92 MB wheel) exceed one call's 64 MiB with the rest:
# an earlier call on the same warm machine carries them repacked as .fa4/cu13.tar.xz (the wheel's
# nvidia_cutlass_dsl folder without lib/stubs, `tar -cf - nvidia_cutlass_dsl | xz -9`, 61 MiB) and runs
# `mkdir -p /tmp/cu13x && tar -xJf .fa4/cu13.tar.xz -C /tmp/cu13x`; they are merged into the package here.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || return 1
if [ -d /tmp/cu13x/nvidia_cutlass_dsl ]; then cp -r /tmp/cu13x/nvidia_cutlass_dsl/. /tmp/site/nvidia_cutlass_dsl/; fi
# nvidia-cutlass-dsl puts its `cutlass` package on sys.path from a .pth file, which --target installs do not run
export PYTHONPATH=/tmp/site/nvidia_cutlass_dsl/dsl_packages:/tmp/site:$PWD LLMTRAIN_CACHE=$PWD/.device \
  PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader
python3 -c 'import torch, triton, transformers; print("torch", torch.__version__, "triton", triton.__version__, "transformers", transformers.__version__)'
