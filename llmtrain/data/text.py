"""`train_loader: {name: text, ...}`: packed MDS token shards → batches for causal-LM pretraining.

YAML (llm-foundry's schema; unknown keys are errors with a did-you-mean):

    train_loader:
      name: text
      dataset:
        max_seq_len: 2048
        local: /data/mds/c4            # or remote: s3://bucket/c4 + local: /tmp/cache/c4
        split: train                   # optional subdirectory
        shuffle: true
        shuffle_seed: 17
        # or a weighted mix; each stream needs its own local directory:
        # streams:
        #   web:  {remote: s3://b/web,  local: /tmp/c/web,  proportion: 0.7}
        #   code: {remote: s3://b/code, local: /tmp/c/code, proportion: 0.3}
      drop_last: true
      num_workers: 8

Batches: `input_ids`, `labels` (B, S) int64 (`labels` is a copy: samples are packed full, there is
no padding), `sequence_id` (B, S) int64 (the document index within the row: a document runs up to
and including its EOS), `source_id` (B,) int64 (index into `stream_names` of each sample's stream).

Shards written with a longer `max_seq_len` than the YAML's are truncated to it (as llm-foundry does);
shorter ones are an error before training starts. Resumption is StreamingDataset's: Composer
checkpoints `dataset.state_dict(samples_in_epoch, from_beginning=True)` and the resumed loader
continues at the exact next sample.

Faults: reads retry through object-store outages, and a bad index.json or shard is a one-line error naming
the stream (llmtrain/data/stream.py). A shard that fails in one worker is never left "being downloaded" for
the others to wait on, and a failure in streaming's download-ahead thread is raised, not taken for the end
of the epoch (streaming alone would end the epoch early, silently, and hang any worker that needed it).
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union

import numpy as np
import torch
from botocore.exceptions import BotoCoreError, ClientError
from composer.core import DataSpec
from composer.utils import dist
from streaming import StreamingDataLoader, StreamingDataset
from streaming.base.dataset import _ShardState
from streaming.base.storage import CloudDownloader

from llmtrain.data.remote import worker_init_fn
from llmtrain.data.stream import CheckedStream
from llmtrain.data.shm import clean_stale_streaming_state, record_owner
from llmtrain.data.shm_prefix import race_free_prefixes
from llmtrain.errors import UserError
from llmtrain.registry import dataloaders
from llmtrain.retry import DEFAULT_RETRY_TIMEOUT
from llmtrain.schema import parse_section

log = logging.getLogger(__name__)

SINGLE_STREAM_NAME = "default"  # the stream name when `dataset:` has remote/local instead of streams


@dataclass(frozen=True)
class StreamConfig:
    remote: Optional[str] = None
    local: Optional[str] = None
    split: Optional[str] = None
    proportion: Optional[float] = None
    repeat: Optional[float] = None
    choose: Optional[int] = None
    download_retry: Optional[int] = None
    download_timeout: Optional[float] = None
    validate_hash: Optional[str] = None
    keep_zip: Optional[bool] = None


@dataclass(frozen=True)
class TextDatasetConfig:
    max_seq_len: int
    remote: Optional[str] = None
    local: Optional[str] = None
    split: Optional[str] = None
    streams: Optional[dict[str, StreamConfig]] = None
    eos_token_id: Optional[int] = None  # default: the tokenizer's
    shuffle: bool = False
    shuffle_seed: int = 9176
    shuffle_algo: Literal["py1e", "py1br", "py1b", "py1s", "py2s", "naive"] = "py1e"
    shuffle_block_size: Optional[int] = None
    num_canonical_nodes: Optional[int] = None
    predownload: Optional[int] = None
    cache_limit: Optional[Union[int, str]] = None
    download_retry: int = 2
    download_timeout: float = 60
    validate_hash: Optional[str] = None
    keep_zip: bool = False
    epoch_size: Optional[Union[int, str]] = None
    partition_algo: Literal["orig", "relaxed"] = "relaxed"
    sampling_method: Literal["balanced", "fixed"] = "balanced"
    sampling_granularity: int = 1
    batching_method: Literal["random", "stratified", "per_stream", "device_per_stream"] = "random"


@dataclass(frozen=True)
class TextLoaderConfig:
    dataset: TextDatasetConfig
    drop_last: bool = True
    num_workers: int = 8
    pin_memory: bool = True
    prefetch_factor: Optional[int] = 2
    persistent_workers: bool = True
    timeout: float = 0


def _named_streams(ds: TextDatasetConfig) -> dict[str, StreamConfig]:
    if ds.streams:
        return dict(ds.streams)
    return {SINGLE_STREAM_NAME: StreamConfig(remote=ds.remote, local=ds.local, split=ds.split)}


def _stream_key(key: str, ds: TextDatasetConfig, name: str) -> str:
    return f"{key}.dataset.streams.{name}" if ds.streams else f"{key}.dataset"


def _check_stream(stream: StreamConfig, where: str) -> None:
    if not stream.remote and not stream.local:
        raise UserError(f"{where}: needs local (a directory written by scripts/data_prep.py) or "
                        f"remote (e.g. s3://bucket/path) plus local (its cache directory)")
    if stream.remote and not stream.local:
        raise UserError(f"{where}.local: required with remote '{stream.remote}'; set it to a local cache "
                        f"directory for the downloaded shards (unique per stream)")
    if stream.remote:
        try:
            CloudDownloader.get(stream.remote)  # knows the scheme; connects only when it first downloads
        except ValueError:
            scheme = stream.remote.split("://", 1)[0]
            raise UserError(f"{where}.remote: '{stream.remote}': scheme '{scheme}://' is not one mosaicml-streaming "
                            "reads; use s3://, gs://, oci://, hf://, ... or a local directory") from None
    else:
        index = Path(stream.local, stream.split or "", "index.json")
        if not index.is_file():
            raise UserError(f"{where}.local: '{index}' not found; write the dataset there with "
                            f"scripts/data_prep.py --out {index.parent}, or set remote")
    weights = [k for k in ("proportion", "repeat", "choose") if getattr(stream, k) is not None]
    if len(weights) > 1:
        raise UserError(f"{where}: set at most one of proportion, repeat, choose (got {', '.join(weights)})")
    for k in weights:
        if getattr(stream, k) < 0:
            raise UserError(f"{where}.{k}: must not be negative, got {getattr(stream, k)}")


def _check(cfg: TextLoaderConfig, key: str) -> None:
    ds = cfg.dataset
    if ds.max_seq_len < 1:
        raise UserError(f"{key}.dataset.max_seq_len: must be a positive number of tokens, got {ds.max_seq_len}")
    if ds.streams is not None and (ds.remote or ds.local):
        raise UserError(f"{key}.dataset: use either streams or remote/local, not both; move remote/local "
                        f"into each stream")
    if ds.streams is not None and not ds.streams:
        raise UserError(f"{key}.dataset.streams: is empty; add at least one stream or use remote/local")
    streams = _named_streams(ds)
    for name, stream in streams.items():
        _check_stream(stream, _stream_key(key, ds, name))
    weighted = [n for n, s in streams.items() if s.proportion is not None]
    if weighted and len(weighted) != len(streams):
        unweighted = next(n for n in streams if n not in weighted)
        raise UserError(f"{key}.dataset.streams.{unweighted}.proportion: missing; give every stream a "
                        f"proportion, or none of them")
    if weighted and not sum(s.proportion for s in streams.values()) > 0:
        raise UserError(f"{key}.dataset.streams: proportions sum to 0; give at least one stream a positive proportion")
    locals_seen: dict[str, str] = {}
    for name, stream in streams.items():
        local = str(Path(stream.local, stream.split or "").resolve())
        if local in locals_seen:
            raise UserError(f"{key}.dataset.streams.{name}.local: same directory as stream "
                            f"'{locals_seen[local]}'; each stream needs its own")
        locals_seen[local] = name
    if cfg.num_workers < 0:
        raise UserError(f"{key}.num_workers: must be 0 or more, got {cfg.num_workers}")
    if cfg.prefetch_factor is not None and cfg.prefetch_factor < 1:
        raise UserError(f"{key}.prefetch_factor: must be at least 1, got {cfg.prefetch_factor}")
    if cfg.timeout < 0:
        raise UserError(f"{key}.timeout: must be 0 (none) or more seconds, got {cfg.timeout}")


def parse_text_section(section: dict, key: str) -> TextLoaderConfig:
    cfg = parse_section(TextLoaderConfig, section, key)
    _check(cfg, key)
    return cfg


def validate_text_section(section: dict, key: str) -> None:
    """Registry hook: check a `name: text` section up front, building nothing."""
    parse_text_section(section, key)


class TextStreamingDataset(StreamingDataset):
    """StreamingDataset of packed `tokens` samples, each tagged with the index of its stream."""

    def __init__(self, *, stream_names: list[str], max_seq_len: int, **kwargs: Any):
        with race_free_prefixes():  # several runs on one host start at once (data/shm_prefix.py)
            super().__init__(**kwargs)
        self.stream_names = stream_names
        self.max_seq_len = max_seq_len
        self._background_error: Optional[BaseException] = None

    def prepare_shard(self, shard_id: int, blocking: bool = True) -> None:
        try:
            super().prepare_shard(shard_id, blocking)
        except BaseException:
            # streaming leaves the shard PREPARING, and every worker that needs it waits for ever. LOCAL with
            # its files missing is a state streaming recovers from: whoever reads it next fetches it again.
            if self._shard_states[shard_id] == _ShardState.PREPARING:
                self._shard_states[shard_id] = _ShardState.LOCAL
            raise

    def _prepare_thread(self, it) -> None:
        try:
            super()._prepare_thread(it)
        except BaseException:
            it.on_exit()  # streaming counts a thread out only when it returns: its `exit()` would wait for ever
            raise

    def _ready_thread(self, it) -> None:
        try:
            super()._ready_thread(it)
        except BaseException:
            it.on_exit()
            raise

    def on_exception(self, future) -> None:
        """A download-ahead thread failed: keep its error for this process's iterator to raise."""
        if future.exception() is not None:
            self._background_error = self._background_error or future.exception()
            self._event.set()

    def _raise_background_error(self) -> None:
        if self._background_error is not None:
            raise self._background_error

    def __iter__(self):
        self._raise_background_error()
        yield from super().__iter__()
        self._raise_background_error()  # the samples stopped because a thread failed, not at the epoch's end

    def get_item(self, sample_id: int, retry: int = 7) -> dict[str, Any]:
        self._raise_background_error()
        sample = super().get_item(sample_id, retry)
        shard_id, _ = self.spanner[sample_id]
        stream_id = int(self.stream_per_shard[shard_id])
        tokens = sample["tokens"]
        if len(tokens) < self.max_seq_len:
            raise UserError(f"stream '{self.stream_names[stream_id]}' sample {sample_id} has {len(tokens)} tokens, "
                            f"fewer than max_seq_len {self.max_seq_len}; lower max_seq_len or re-run "
                            f"scripts/data_prep.py with --max-seq-len {self.max_seq_len}")
        # astype copies: streaming hands out read-only views of the shard.
        return {"tokens": torch.from_numpy(tokens[: self.max_seq_len].astype(np.int64)), "source_id": stream_id}


class TextCollator:
    """Stack packed samples into `input_ids`, `labels`, `sequence_id` and `source_id`."""

    def __init__(self, eos_token_id: int):
        self.eos_token_id = eos_token_id

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        input_ids = torch.stack([s["tokens"] for s in samples])
        is_eos = (input_ids == self.eos_token_id).to(torch.int64)
        # The number of EOS strictly before each position: an EOS still belongs to its document.
        sequence_id = torch.cumsum(is_eos, dim=1) - is_eos
        return {
            "input_ids": input_ids,
            "labels": input_ids.clone(),
            "sequence_id": sequence_id,
            "source_id": torch.tensor([s["source_id"] for s in samples], dtype=torch.int64),
        }


class TextDataLoader(StreamingDataLoader):
    """A StreamingDataLoader that also names its streams (for per-source metrics)."""

    @property
    def stream_names(self) -> list[str]:
        return self.dataset.stream_names

    def __iter__(self):
        try:
            yield from super().__iter__()
        except UserError as err:
            # From a worker, torch re-raises it with the worker's traceback in the message: keep our line.
            line = str(err).strip().splitlines()[-1]
            raise UserError(line.removeprefix(f"{UserError.__module__}.UserError: ")) from None


def _check_shards(dataset: TextStreamingDataset, ds: TextDatasetConfig, key: str) -> None:
    """Fail before training when a stream's shards cannot give `max_seq_len`-token samples."""
    streams = _named_streams(ds)
    for shard, stream_id in zip(dataset.shards, dataset.stream_per_shard):
        name = dataset.stream_names[stream_id]
        where = _stream_key(key, ds, name)
        columns = dict(zip(shard.column_names, shard.column_encodings))
        encoding = columns.get("tokens")
        if encoding is None or not encoding.startswith("ndarray:"):
            raise UserError(f"{where}: shards of '{streams[name].remote or streams[name].local}' have columns "
                            f"{columns}, need a 'tokens' ndarray column; write them with scripts/data_prep.py")
        parts = encoding.split(":")  # ndarray:DTYPE[:SHAPE]
        if len(parts) == 3 and int(parts[2].split(",")[0]) < ds.max_seq_len:
            raise UserError(f"{key}.dataset.max_seq_len: is {ds.max_seq_len} but stream '{name}' has samples of "
                            f"{parts[2]} tokens; lower max_seq_len or re-run scripts/data_prep.py with "
                            f"--max-seq-len {ds.max_seq_len}")


@functools.cache
def _clean_stale_state_once() -> None:
    """Once per process (a second call could not tell this run's train loader from a stale one); a call
    that raised is not remembered."""
    if dist.get_local_rank() == 0:
        removed = clean_stale_streaming_state()
        if removed:
            log.info("removed %d stale streaming shared-memory blocks / locks", len(removed))
    if dist.is_initialized():  # otherwise streaming sets up (and tears down) its own process group
        dist.barrier()


def build_text_dataloader(section: dict, tokenizer, device_batch_size: int, key: str = "train_loader",
                          retry_timeout: float = DEFAULT_RETRY_TIMEOUT) -> DataSpec:
    """The DataSpec for a `name: text` section (`section` without `name`); reads wait out an outage of the
    object store for up to `retry_timeout` seconds (the run's object_store_retry_timeout)."""
    return _build(parse_text_section(section, key), tokenizer, device_batch_size, key, retry_timeout)


def _build(cfg: TextLoaderConfig, tokenizer, device_batch_size: int, key: str = "train_loader",
           retry_timeout: float = DEFAULT_RETRY_TIMEOUT) -> DataSpec:
    ds = cfg.dataset
    eos_token_id = ds.eos_token_id if ds.eos_token_id is not None else getattr(tokenizer, "eos_token_id", None)
    if eos_token_id is None:
        raise UserError(f"{key}.dataset.eos_token_id: the tokenizer has no EOS token; set eos_token_id")
    named = _named_streams(ds)
    streams = [CheckedStream(key=_stream_key(key, ds, name), retry_timeout=retry_timeout,
                             **{k: v for k, v in vars(s).items() if v is not None})
               for name, s in named.items()]
    _clean_stale_state_once()
    try:
        dataset = TextStreamingDataset(
            stream_names=list(named), max_seq_len=ds.max_seq_len, streams=streams,
            batch_size=device_batch_size, shuffle=ds.shuffle, shuffle_seed=ds.shuffle_seed,
            shuffle_algo=ds.shuffle_algo, shuffle_block_size=ds.shuffle_block_size,
            num_canonical_nodes=ds.num_canonical_nodes, predownload=ds.predownload,
            cache_limit=ds.cache_limit, download_retry=ds.download_retry,
            download_timeout=ds.download_timeout, validate_hash=ds.validate_hash, keep_zip=ds.keep_zip,
            epoch_size=ds.epoch_size, partition_algo=ds.partition_algo,
            sampling_method=ds.sampling_method, sampling_granularity=ds.sampling_granularity,
            batching_method=ds.batching_method)
    except (OSError, RuntimeError, ValueError, BotoCoreError, ClientError) as err:
        raise UserError(f"{key}.dataset: cannot open the dataset ({type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else ''}); check remote/local/split") from None
    _check_shards(dataset, ds, key)
    if dist.get_local_rank() == 0:  # the local leader creates the dataset's shared memory
        if not hasattr(dataset, "_shm_prefix_int"):  # streaming's internals moved: fail loudly
            raise RuntimeError("StreamingDataset has no _shm_prefix_int; update llmtrain/data/text.py "
                               "for this mosaicml-streaming version")
        record_owner(dataset._shm_prefix_int)
    workers = cfg.num_workers
    loader = TextDataLoader(
        dataset, batch_size=device_batch_size, collate_fn=TextCollator(eos_token_id),
        drop_last=cfg.drop_last, num_workers=workers,
        pin_memory=cfg.pin_memory and torch.cuda.is_available(),  # pinning needs an accelerator
        prefetch_factor=cfg.prefetch_factor if workers > 0 else None,  # torch rejects both without workers
        persistent_workers=cfg.persistent_workers and workers > 0, timeout=cfg.timeout,
        worker_init_fn=worker_init_fn)  # each worker its own object-store connection (data/remote.py)
    return DataSpec(loader, get_num_samples_in_batch=_num_samples, get_num_tokens_in_batch=_num_tokens)


def _num_samples(batch: dict[str, torch.Tensor]) -> int:
    return int(batch["input_ids"].shape[0])


def _num_tokens(batch: dict[str, torch.Tensor]) -> int:
    return int(batch["input_ids"].numel())  # packed: every position is a real token


dataloaders.register("text", parse_text_section, _build)
