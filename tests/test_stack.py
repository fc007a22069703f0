"""The stack llmtrain runs on (llmtrain/stack.py), and every Composer / streaming / torch internal that
llmtrain reaches into: each is checked here on the real installed package, so an upgrade that moves one
fails here, by name, instead of silently changing a run."""
import inspect
import subprocess
import sys

import pytest
import torch
from packaging.version import Version

from llmtrain import stack


def test_the_stack_is_torch_2_11_or_newer_with_the_pinned_composer_and_streaming():
    versions = stack.check()
    assert Version(Version(versions["torch"]).base_version) >= Version("2.11")
    assert versions["mosaicml"] == "0.32.1" and versions["mosaicml-streaming"] == "0.13.0"
    done = subprocess.run([sys.executable, "-m", "llmtrain.stack"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("stack: torch ")


def test_composer_checkpoint_saver_internals(tmp_path):
    # llmtrain/train.py reads trainer._checkpoint_saver; llmtrain/checkpoint/uploads.py replaces its
    # remote_uploader and shortens its symlink polling.
    from composer.callbacks import CheckpointSaver
    from composer.trainer import Trainer
    assert "self._checkpoint_saver = " in inspect.getsource(Trainer.__init__)
    saver = CheckpointSaver(folder="s3://bucket/run/checkpoints", num_concurrent_uploads=2)
    assert saver.remote_uploader is not None and saver.num_concurrent_uploads == 2
    assert isinstance(saver._symlink_upload_wait_before_next_try_in_seconds, float)


def test_composer_remote_uploader_internals():
    # PatientRemoteUploader (llmtrain/checkpoint/uploads.py) subclasses RemoteUploader and copies these
    from composer.utils import RemoteUploader
    source = inspect.getsource(RemoteUploader)
    for attribute in ("self.remote_folder =", "self.path =", "self.backend_kwargs =",
                      "self.is_remote_upload_failed =", "self.futures ="):
        assert attribute in source, attribute
    assert callable(RemoteUploader.wait_and_close) and callable(RemoteUploader.upload_file_async)


def test_composer_engine_close_hook():
    # the run loop (llmtrain/train.py fit) unregisters Engine._close from atexit when it rebuilds a trainer
    from composer.core.engine import Engine
    assert callable(Engine._close)


def test_streaming_internals(tmp_path):
    # remote.fresh_downloaders replaces Stream._downloader; text.py reads _shm_prefix_int and
    # _shard_states with _ShardState; shm.py names streaming's lock files.
    from streaming import Stream, StreamingDataset
    from streaming.base import constant
    from streaming.base.dataset import _ShardState
    stream = Stream(remote="s3://bucket/x", local=str(tmp_path / "x"))
    assert hasattr(stream, "_downloader")
    assert {"REMOTE", "PREPARING", "LOCAL"} <= set(_ShardState.__members__)
    for name in ("BARRIER_FILELOCK", "CACHE_FILELOCK", "LOCALS"):
        assert isinstance(getattr(constant, name), str), name
    assert constant.LOCALS in constant.SHM_TO_CLEAN
    source = inspect.getsource(StreamingDataset.__init__)
    assert "self._shm_prefix_int" in source and "self._shard_states" in inspect.getsource(StreamingDataset)


def test_torch_fsdp2_collectives_module():
    # gloo.gloo_hsdp_all_reduce wraps FSDP2's collectives' `dist` for HSDP over gloo
    from torch.distributed.fsdp._fully_shard import _fsdp_collectives as collectives
    assert hasattr(collectives, "dist") and hasattr(torch.cpu, "Event")


def test_a_venv_with_the_old_stack_is_refused_in_one_line(monkeypatch):
    versions = {"torch": "2.7.0", "torchvision": "0.22.0", "mosaicml": "0.32.1", "mosaicml-streaming": "0.13.0",
                "transformers": "4.57.6", "numpy": "2.2.6"}
    monkeypatch.setattr(stack.metadata, "version", versions.__getitem__)
    with pytest.raises(stack.UserError, match=r"^torch 2\.7\.0 is installed; llmtrain needs torch >= 2\.11: run "
                                              r"`make setup`"):
        stack.check()
