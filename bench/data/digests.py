"""Content digests of dataset archives: the sha256 of the sorted member names and bytes inside, so a
re-zipped or re-gzipped copy of the same files verifies and a truncated or altered one never does."""

from __future__ import annotations

import gzip
import hashlib
import lzma
import struct
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from metabench.errors import DataError

_CHUNK = 1 << 20


class _Readable(Protocol):
    """Anything with ``read(n)``: files, zip members, gzip streams, HTTP responses."""

    def read(self, size: int = -1, /) -> bytes: ...


def _framed(data: bytes) -> bytes:
    """Length-prefix ``data`` so that consecutive fields can never run into each other."""
    return struct.pack(">Q", len(data)) + data


def _chunks(stream: _Readable) -> Iterator[bytes]:
    """Read ``stream`` in bounded pieces, so a large member never sits in memory whole."""
    while chunk := stream.read(_CHUNK):
        yield chunk


def _zip_digest(path: Path) -> str:
    """sha256 over the sorted file members, each framed as (name length, name, size, bytes).

    Directory entries, timestamps, compression method and member order do not enter, which is what
    lets a re-zipped copy of the same files verify. The length prefixes make the framing unambiguous:
    ``{"a": b"bc"}`` and ``{"ab": b"c"}`` hash differently.
    """
    h = hashlib.sha256()
    with zipfile.ZipFile(path) as zf:
        members = sorted((i for i in zf.infolist() if not i.is_dir()), key=lambda i: i.filename)
        for info in members:
            h.update(_framed(info.filename.encode("utf-8")))
            h.update(struct.pack(">Q", info.file_size))
            seen = 0
            with zf.open(info) as member:
                for chunk in _chunks(member):
                    seen += len(chunk)
                    h.update(chunk)
            if seen != info.file_size:
                raise zipfile.BadZipFile(f"member {info.filename!r} has {seen} bytes, not {info.file_size}")
    return h.hexdigest()


def _stream_digest(stream: _Readable) -> str:
    h = hashlib.sha256()
    for chunk in _chunks(stream):
        h.update(chunk)
    return h.hexdigest()


def _gz_digest(path: Path) -> str:
    """sha256 of the decompressed bytes: gzip headers (mtime, name, level) vary between copies.

    An empty file or one without the gzip magic is refused up front, because the gzip module reads
    an empty file as an empty stream rather than as an error.
    """
    with path.open("rb") as raw:
        if raw.read(2) != b"\x1f\x8b":
            raise gzip.BadGzipFile("not a gzip file (no gzip header)")
    with gzip.open(path, "rb") as stream:
        return _stream_digest(stream)


def _file_digest(path: Path) -> str:
    with path.open("rb") as stream:
        return _stream_digest(stream)


_CORRUPT = (
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    struct.error,
    ValueError,
    NotImplementedError,
    RuntimeError,
    OSError,
)


def content_digest(path: Path) -> str:
    """The digest that :attr:`Archive.content_sha256` records, chosen by the file's suffix.

    ``.zip``: names and bytes of the file members (see :func:`_zip_digest`); ``.gz``: the decompressed
    bytes; anything else: the file's bytes. A file that cannot be decoded raises :class:`DataError`,
    because a half-downloaded archive must be reported, not hashed.
    """
    path = Path(path)
    name = path.name.lower()
    digest = _zip_digest if name.endswith(".zip") else _gz_digest if name.endswith(".gz") else _file_digest
    try:
        return digest(path)
    except (FileNotFoundError, PermissionError, IsADirectoryError) as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}", "check the path and its permissions") from err
    except _CORRUPT as err:
        raise DataError(
            f"{path} is corrupt or truncated ({type(err).__name__}: {err})",
            "delete it and run again to re-download it, or replace it with a fresh copy; "
            "`metabench data verify` checks every archive",
        ) from err
