"""llmtrain: YAML-driven pretraining of MPT-style models on Composer (see README.md)."""
import logging


class _TorchaoEnumNotice(logging.Filter):
    """transformers imports torchao whenever it is installed (the `hopper` and `test` extras); torchao 0.18
    registers two Enums with torch's pytree, which torch >= 2.12 answers with a deprecation warning on every
    process start. Nothing is wrong, and the notice would stand before every one-line error we print."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is an Enum subclass and is now natively supported" not in record.getMessage()


logging.getLogger("torch.utils._pytree").addFilter(_TorchaoEnumNotice())
