"""Data: offline tokenizers, data prep (scripts/data_prep.py) and the `text` train/eval loader.

The loader is registered here but imported on first use, so data prep and its worker processes do
not pay for importing Composer and streaming.
"""
from llmtrain.registry import dataloaders


def build_text_dataloader(section: dict, tokenizer, device_batch_size: int, key: str = "train_loader"):
    from llmtrain.data.text import build_text_dataloader as build
    return build(section, tokenizer, device_batch_size, key)


def validate_text_section(section: dict, key: str) -> None:
    from llmtrain.data.text import validate_text_section as validate
    validate(section, key)


dataloaders.register("text", build_text_dataloader, validate=validate_text_section)
