"""Dataset archives: where they come from, how they are checked, how they are fetched.

Each archive has one source of truth, its official address and a digest of its *contents*. The digest
covers the file names and bytes inside an archive rather than the archive file itself, so a copy that was
re-zipped or re-gzipped (as the copies in ``../shared/data`` were) still verifies, while a truncated
download, an HTML error page saved under the archive's name or a bit-flipped file never does.

Downloads go to a temporary file next to their final name and are renamed into place only after they
verify, so an interrupted or broken download never leaves a file that a later run would trust.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from http.client import HTTPException, HTTPResponse, IncompleteRead
from pathlib import Path
from typing import BinaryIO
from urllib.error import HTTPError, URLError

from metabench.data.digests import _CORRUPT, _chunks, _Readable, content_digest
from metabench.errors import DataError
from metabench.paths import cache_dir, data_dirs

_MIRROR_ENV = "METABENCH_MIRROR"
_USER_AGENT = "metabench/0.1"


@dataclass(frozen=True)
class Archive:
    """One downloadable file of a dataset, as it sits in ``<folder>/<dataset>/<filename>``.

    ``content_sha256`` is :func:`content_digest`'s value, not the sha256 of the file, so that any
    faithful copy verifies. ``size`` is the byte size of the file as officially distributed, shown to
    users but never checked, because mirrors and re-packed copies differ in size. ``mirrors`` are
    further addresses tried in order when ``url`` fails (a dead host, a truncated or wrong file): one
    host going away must not make a dataset impossible to download.
    """

    dataset: str
    filename: str
    url: str
    content_sha256: str
    size: int | None = None
    mirrors: tuple[str, ...] = ()

    @property
    def urls(self) -> tuple[str, ...]:
        """Every official address, the primary one first."""
        return (self.url, *self.mirrors)


def _mismatch(archive: Archive, found: str) -> str:
    return f"expected content digest {archive.content_sha256[:12]}…, found {found[:12]}…"


def verify(archive: Archive, path: Path) -> None:
    """Raise :class:`DataError` unless ``path`` holds exactly the contents the catalogue records."""
    found = content_digest(path)
    if found != archive.content_sha256:
        raise DataError(
            f"{path} is not the expected {archive.dataset} archive {archive.filename}: {_mismatch(archive, found)}",
            f"delete it and run again to re-download it, or download it by hand from {archive.url}",
        )


# --------------------------------------------------------------------------- locating and caching


def locate(archive: Archive, data_dir: Path | None = None) -> Path | None:
    """The first ``<folder>/<dataset>/<filename>`` that exists, searching ``paths.data_dirs`` in order."""
    for folder in data_dirs(data_dir):
        candidate = folder / archive.dataset / archive.filename
        if candidate.is_file():
            return candidate
    return None


def _marker(archive: Archive, path: Path) -> Path:
    """A cache file whose existence says "this exact file was verified against this digest".

    Keyed on the absolute path, size and mtime (a changed file gets a new key) and on the expected
    digest (a changed catalogue entry does too). It lives in the cache because data folders may be
    read-only.
    """
    st = path.stat()
    key = f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{archive.content_sha256}"
    return cache_dir() / "verified" / hashlib.sha256(key.encode("utf-8")).hexdigest()


def _remember_verified(archive: Archive, path: Path) -> None:
    """Record a successful verification; failing to write the marker only costs a re-check later."""
    try:
        marker = _marker(archive, path)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"{path.resolve()}\n{archive.content_sha256}\n", encoding="utf-8")
    except OSError:
        pass


def forget_verified(path: Path) -> None:
    """Drop the "verified" marker of whatever archive ``path`` is, so the next run checks it again.

    The marker trusts size and mtime; a file damaged in place with both unchanged passes it, and is only
    caught when decoding fails. After that the file must be verified in full again.
    """
    for files in CATALOGUE.values():
        for archive in files:
            if archive.filename == Path(path).name:
                with contextlib.suppress(OSError):
                    _marker(archive, Path(path)).unlink(missing_ok=True)


def decode_error(path: Path, error: BaseException) -> DataError:
    """The error for an archive that verified once but does not decode now."""
    forget_verified(path)
    return DataError(
        f"{path} cannot be decoded ({type(error).__name__}: {error}): it changed or was damaged after it was verified",
        "run `metabench data verify` to check every archive, then replace or re-download the damaged one",
    )


#: what decoding a damaged archive raises: zip, zlib and gzip errors, truncation, unreadable images
DECODE_ERRORS = _CORRUPT


def _verify_once(archive: Archive, path: Path) -> None:
    """:func:`verify`, skipped when a marker shows this very file already passed."""
    if _marker(archive, path).is_file():
        return
    verify(archive, path)
    _remember_verified(archive, path)


def fetch(archive: Archive, data_dir: Path | None = None, *, download: bool = True, progress: bool = True) -> Path:
    """A verified local copy of ``archive``: found in the data folders, else downloaded to the cache."""
    found = locate(archive, data_dir)
    if found is not None:
        _verify_once(archive, found)
        return found
    if not download:
        searched = ", ".join(str(folder / archive.dataset) for folder in data_dirs(data_dir))
        raise DataError(
            f"{archive.dataset} archive {archive.filename} not found; searched: {searched}",
            f"download it from {archive.url}, then pass the folder that holds "
            f"{archive.dataset}/{archive.filename} with --data-dir or METABENCH_DATA, or allow downloading",
        )
    path = _download(archive, cache_dir() / archive.dataset, progress=progress)
    _remember_verified(archive, path)
    return path


# --------------------------------------------------------------------------- downloading


def _source_urls(archive: Archive) -> tuple[str, ...]:
    """The official addresses in order, or only ``$METABENCH_MIRROR/<dataset>/<filename>`` when set.

    A mirror the user names replaces the official addresses rather than preceding them, so a test or
    an air-gapped lab never reaches the internet behind its back.
    """
    mirror = os.environ.get(_MIRROR_ENV)
    if mirror:
        return (f"{mirror.rstrip('/')}/{archive.dataset}/{archive.filename}",)
    return archive.urls


def _content_length(response: HTTPResponse) -> int | None:
    """The announced body size, which is what lets a connection cut short be told from a small file."""
    value = response.headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _copy(response: _Readable, out: BinaryIO, total: int | None, label: str, progress: bool) -> int:
    """Stream ``response`` into ``out``, with a rich progress bar on stderr when asked."""
    if not progress:
        return sum(out.write(chunk) for chunk in _chunks(response))
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    written = 0
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)
        for chunk in _chunks(response):
            written += out.write(chunk)
            bar.update(task, advance=len(chunk))
    return written


def _looks_like_html(path: Path) -> bool:
    """True for the error or login pages that dead links serve in place of a dataset."""
    with path.open("rb") as stream:
        head = stream.read(512).lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml"))


def _receive(url: str, tmp: Path, label: str, *, progress: bool, timeout: float) -> None:
    """Download ``url`` into ``tmp``; raise :class:`OSError` subclasses or ``DataError`` on failure."""
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    with urllib.request.urlopen(request, timeout=timeout) as response, tmp.open("wb") as out:
        total = _content_length(response)
        written = _copy(response, out, total, label, progress)
    if total is not None and written < total:
        raise DataError(f"the download from {url} stopped after {written:,} of {total:,} bytes")


def _check_download(archive: Archive, tmp: Path, url: str) -> None:
    """Refuse a downloaded file that is HTML, undecodable, or not the catalogued contents."""
    if _looks_like_html(tmp):
        raise DataError(
            f"{url} returned a web page instead of {archive.filename} (the link may have moved or need a login)"
        )
    try:
        found = content_digest(tmp)
    except DataError as err:
        cause = err.__cause__
        detail = f"{type(cause).__name__}: {cause}" if cause is not None else err.message
        raise DataError(f"the file downloaded from {url} is corrupt or truncated ({detail})") from err
    if found != archive.content_sha256:
        raise DataError(f"the file downloaded from {url} is not {archive.filename}: {_mismatch(archive, found)}")


def _failure(err: BaseException, url: str, timeout: float) -> str:
    """One line saying what went wrong with a download, in the user's terms."""
    if isinstance(err, HTTPError):
        return f"downloading {url} failed: HTTP {err.code} {err.reason}"
    if isinstance(err, IncompleteRead):
        return f"the download from {url} stopped before the end: the connection was closed early"
    if isinstance(err, TimeoutError) or (isinstance(err, URLError) and isinstance(err.reason, TimeoutError)):
        return f"downloading {url} timed out after {timeout:g} s"
    if isinstance(err, URLError):
        return f"could not reach {url}: {err.reason}"
    return f"downloading {url} failed: {type(err).__name__}: {err}"


def _download_from(archive: Archive, url: str, tmp: Path, final: Path, *, progress: bool, timeout: float) -> None:
    """One attempt: ``url`` into ``tmp``, checked, renamed to ``final``; ``DataError`` on any failure."""
    try:
        _receive(url, tmp, archive.filename, progress=progress, timeout=timeout)
        _check_download(archive, tmp, url)
        os.replace(tmp, final)
    except (OSError, HTTPException, ValueError) as err:
        raise DataError(_failure(err, url, timeout)) from err


def download(archive: Archive, dest_dir: Path, *, progress: bool = True, timeout: float = 60.0) -> Path:
    """Download ``archive`` into ``dest_dir/<filename>``, verified, or raise :class:`DataError`.

    The bytes go to a temporary file in ``dest_dir`` (same filesystem, so the final ``os.replace`` is
    atomic) and are renamed only after the content digest matches; on any failure, Ctrl-C included,
    the temporary file is removed. The archive's addresses are tried in order until one delivers the
    catalogued contents; the error, when all fail, says what went wrong at each (on one line).
    ``$METABENCH_MIRROR`` replaces the official addresses with ``<mirror>/<dataset>/<filename>``.
    """
    dest_dir = Path(dest_dir)
    urls = _source_urls(archive)
    hint = f"download it by hand from {archive.url} into {dest_dir}, or pass --data-dir"
    if urls != archive.urls:
        hint += f"; {urls[0]} came from ${_MIRROR_ENV}"
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=dest_dir, prefix=".partial-", suffix=f"-{archive.filename}")
        os.close(fd)
    except OSError as err:
        raise DataError(f"cannot write to {dest_dir}: {err.strerror or err}", hint) from err
    tmp = Path(name)
    final = dest_dir / archive.filename
    failures: list[DataError] = []
    try:
        for url in urls:
            try:
                _download_from(archive, url, tmp, final, progress=progress, timeout=timeout)
                return final
            except DataError as err:
                failures.append(err)
    finally:
        tmp.unlink(missing_ok=True)
    message = "; then ".join(failure.message for failure in failures)
    raise DataError(message, hint) from failures[-1]


# ``fetch`` takes a ``download`` flag, which shadows this module's function inside it.
_download = download


# --------------------------------------------------------------------------- catalogue

_OMNIGLOT_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/"
# torchvision's mirrors, in its order: the S3 copy first, because LeCun's page now often refuses
# downloads; the digest, not the host, decides what is accepted.
_MNIST_URLS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")


def _mnist(filename: str, content_sha256: str) -> Archive:
    """An MNIST IDX file; ``content_sha256`` is the sha256 of the uncompressed IDX bytes."""
    primary, *rest = (base + filename for base in _MNIST_URLS)
    return Archive("mnist", filename, primary, content_sha256, mirrors=tuple(rest))


OMNIGLOT_BACKGROUND = Archive(
    dataset="omniglot",
    filename="images_background.zip",
    url=_OMNIGLOT_URL + "images_background.zip",
    content_sha256="cf37a435932cf9fbead947b447c1b4d9673162d3e47f048f5bdaaeeed6b5577e",
)
OMNIGLOT_EVALUATION = Archive(
    dataset="omniglot",
    filename="images_evaluation.zip",
    url=_OMNIGLOT_URL + "images_evaluation.zip",
    content_sha256="568892d75da967755e333aa801994cde5153e019471fb0a543559e18d0370af9",
)

MNIST_FILES: tuple[Archive, ...] = (
    _mnist("train-images-idx3-ubyte.gz", "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    _mnist("train-labels-idx1-ubyte.gz", "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    _mnist("t10k-images-idx3-ubyte.gz", "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    _mnist("t10k-labels-idx1-ubyte.gz", "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
)

CATALOGUE: dict[str, tuple[Archive, ...]] = {
    "omniglot": (OMNIGLOT_BACKGROUND, OMNIGLOT_EVALUATION),
    "mnist": MNIST_FILES,
}
