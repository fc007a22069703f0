"""Input files opened as byte streams, decompressed as they are read: memory stays constant whatever the size.

`open_binary(path)` picks the decoder from the name: `.gz` (gzip), `.zst` (zstandard, any number of
concatenated frames, windows up to 2 GiB as `zstd --long=31` writes) or none. A file that ends inside
a compressed frame raises `CorruptCompression` (gzip raises `EOFError`) instead of yielding the part
that was there: a download cut short is an error, not a smaller corpus.
"""
from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import BinaryIO

import zstandard

_ZSTD_READ = 1 << 17  # compressed bytes per read: a few MB of text at most in memory at once
_ZSTD_MAX_WINDOW = 1 << 31
_BUFFER = 1 << 20


class CorruptCompression(Exception):
    """The compressed stream is cut short."""


class _ZstdReader(io.RawIOBase):
    """Decompresses a .zst file frame after frame as its bytes are asked for."""

    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self._dctx = zstandard.ZstdDecompressor(max_window_size=_ZSTD_MAX_WINDOW)
        self._frame = self._dctx.decompressobj()
        self._in_frame = False  # input of the current frame has been fed but its end not yet seen
        self._out = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._out:
            data = self._raw.read(_ZSTD_READ)
            if not data:
                if self._in_frame:
                    raise CorruptCompression("the file ends inside a zstd frame (cut short)")
                return 0
            self._out = memoryview(self._feed(data))
        n = min(len(buffer), len(self._out))
        buffer[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def _feed(self, data: bytes) -> bytes:
        parts = []
        while data:
            self._in_frame = True
            parts.append(self._frame.decompress(data))
            if not self._frame.eof:
                break
            data = self._frame.unused_data  # the next frame starts in this read
            self._frame = self._dctx.decompressobj()
            self._in_frame = False
        return b"".join(parts)

    def close(self) -> None:
        self._raw.close()
        super().close()


def open_binary(path: Path) -> BinaryIO:
    """The decompressed bytes of `path` as a buffered stream (iterate it for lines)."""
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".zst"):
        return io.BufferedReader(_ZstdReader(open(path, "rb")), buffer_size=_BUFFER)
    return open(path, "rb")


DECOMPRESSION_ERRORS = (EOFError, CorruptCompression, zstandard.ZstdError)
