from setuptools import find_packages, setup

setup(
    name="llmtrain",
    version="0.1.0",
    description="YAML-driven distributed pretraining of MPT-style language models on Composer",
    packages=find_packages(include=["llmtrain", "llmtrain.*"]),
    python_requires=">=3.10",
    install_requires=[
        "mosaicml==0.32.1",
        "mosaicml-streaming==0.13.0",
        "omegaconf>=2.3,<2.5",
        "lion-pytorch==0.2.5",
        "transformers>=4.56,<5",
        "wandb<0.29",
        "triton",
        "torch",
        "safetensors",
        "boto3",
        "cramjam",
        "matplotlib",
    ],
    extras_require={"test": ["pytest>=8", "pytest-timeout"]},
)
