"""llmtrain's install. Composer and streaming come from requirements/no-deps.txt, installed with --no-deps:
their last releases pin torch < 2.7.1 and numpy < 2.2, and we run on torch >= 2.11 (docs/install.md).
What they import at run time is declared here instead, with bounds that admit the new stack."""
from setuptools import find_packages, setup

# What mosaicml==0.32.1 imports for the Trainer, FSDP2, checkpoints and its loggers; its torch, torchvision,
# numpy, packaging, torchmetrics and pillow pins are the ones we override.
COMPOSER_RUNTIME = [
    "torch>=2.11",
    "torchvision>=0.26",  # composer.utils.misc imports it
    "numpy>=1.26",
    "torchmetrics>=1.7",
    "packaging>=23",
    "pyyaml>=6,<7",
    "tqdm>=4.62,<5",
    "requests>=2.26,<3",
    "psutil>=5.8",
    "coolname>=1.1,<3",
    "tabulate==0.9.0",
    "py-cpuinfo>=8,<10",
    "importlib-metadata>=5",
    "mosaicml-cli>=0.5.25,<0.8",
]
# What mosaicml-streaming==0.13.0 imports for local and S3 streams (its GCS, OCI and Azure clients are left out).
STREAMING_RUNTIME = [
    "boto3>=1.21.45,<2",
    "brotli>=1.0.9",
    "python-snappy>=0.6.1,<1",
    "xxhash>=3,<4",
    "zstd>=1.5.2.5,<2",
    "catalogue>=2,<3",
    "matplotlib>=3.5.2,<4",
]

setup(
    name="llmtrain",
    version="0.1.0",
    description="YAML-driven distributed pretraining of MPT-style language models on Composer",
    packages=find_packages(include=["llmtrain", "llmtrain.*"]),
    python_requires=">=3.10",
    install_requires=COMPOSER_RUNTIME + STREAMING_RUNTIME + [
        "omegaconf>=2.3,<2.5",
        "lion-pytorch==0.2.5",
        "transformers>=4.56,<5",
        "wandb<0.29",
        "triton",
        "safetensors",
        "cramjam",
        # Data prep (issue 20): parquet / arrow / `datasets` folders a batch at a time, and .zst decompressed
        # as it is read (cramjam only decompresses whole buffers).
        "pyarrow>=15",
        "zstandard>=0.22",
    ],
    extras_require={
        # torchao: the FP8 tests (emulated on CPU); xdist: `make test` runs the suite in TEST_WORKERS processes.
        "test": ["pytest>=8", "pytest-timeout", "pytest-xdist>=3.5", "torchao==0.18.0"],
        # Hopper speed (issue 18): FP8 GEMMs; never needed on CPU.
        "hopper": ["torchao==0.18.0", "flash-attn-4[cu13]==4.0.0b40", "nvidia-cutlass-dsl[cu13]==4.8.1"],
    },
)
