"""Suite-wide pytest set-up."""
import pytest
import torch


# --- `gpu` marker: GPU tests run on the device machine and are skipped where there is no CUDA ---
def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run on the device machine: pytest -m gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
