"""MNIST: IDX parsing, the cached arrays, and downloads of the four files from a local HTTP server.

The parser and the load path are tested on small synthetic IDX files (milliseconds); the tests marked
``data`` serve the real files from the shared data folder on 127.0.0.1, intact, truncated and
corrupted, and drive the ``metabench data`` commands against them.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from metabench.cli import app
from metabench.data import archives, mnist
from metabench.data.archives import MNIST_FILES, Archive, content_digest
from metabench.errors import DataError
from tests import test_archives as archive_tests
from tests.test_archives import Server, cache_files, flip_gzip_bytes, serve, shared

# The archive tests' fixtures, reused rather than copied: a per-test cache with no data folder or
# mirror from the environment (autouse), the 127.0.0.1 HTTP server, and a small catalogued zip.
isolated = archive_tests.isolated
server = archive_tests.server
toy = archive_tests.toy

runner = CliRunner()

# Label counts of digits 0-9 as published with the dataset (../shared/data/mnist/SOURCE.md).
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def idx(values: torch.Tensor) -> bytes:
    """The IDX encoding of a ``uint8`` array: 0000, type 08, ndim, big-endian dims, values."""
    header = struct.pack(">HBB", 0, 0x08, values.dim()) + struct.pack(f">{values.dim()}I", *values.shape)
    return header + values.contiguous().numpy().tobytes()


def write_gz(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, mtime=0))
    return path


def synthetic(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 28, 28), generator=generator, dtype=torch.uint8)
    labels = torch.arange(n, dtype=torch.uint8) % 10
    return images, labels


@pytest.fixture
def fake_catalogue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, torch.Tensor]]:
    """A data folder with four small synthetic IDX files, catalogued under their real names."""
    root = tmp_path / "fake"
    train_images, train_labels = synthetic(30, 1)
    test_images, test_labels = synthetic(20, 2)
    arrays = {
        "train-images-idx3-ubyte.gz": train_images,
        "train-labels-idx1-ubyte.gz": train_labels,
        "t10k-images-idx3-ubyte.gz": test_images,
        "t10k-labels-idx1-ubyte.gz": test_labels,
    }
    files = []
    for name, values in arrays.items():
        path = write_gz(root / "mnist" / name, idx(values))
        files.append(Archive("mnist", name, f"https://example.invalid/{name}", content_digest(path)))
    monkeypatch.setitem(archives.CATALOGUE, "mnist", tuple(files))
    return root, arrays


# --------------------------------------------------------------------------- catalogue


def test_catalogue_uses_the_pytorch_mirrors_in_order() -> None:
    for archive in MNIST_FILES:
        assert archive.urls == (
            f"https://ossci-datasets.s3.amazonaws.com/mnist/{archive.filename}",
            f"http://yann.lecun.com/exdb/mnist/{archive.filename}",
        )


# --------------------------------------------------------------------------- IDX parsing


def test_read_idx_returns_the_stored_array(tmp_path: Path) -> None:
    images, labels = synthetic(7, 0)
    assert torch.equal(mnist.read_idx(write_gz(tmp_path / "i.gz", idx(images)), 3), images)
    assert torch.equal(mnist.read_idx(write_gz(tmp_path / "l.gz", idx(labels)), 1), labels)


GOOD = idx(torch.arange(2 * 28 * 28, dtype=torch.int64).remainder(256).to(torch.uint8).view(2, 28, 28))

BAD_IDX = {
    "empty": (b"", "too short"),
    "magic-not-zero": (b"\x01\x00" + GOOD[2:], "magic number starts 0100"),
    "int32-type-code": (GOOD[:2] + b"\x0c" + GOOD[3:], "type code 0x0c"),
    "labels-header-on-images": (struct.pack(">HBBI", 0, 8, 1, 2 * 28 * 28) + GOOD[16:], "1 dimensions, expected 3"),
    "header-cut-short": (GOOD[:10], "too short for a 3-dimensional header"),
    "fewer-values-than-header": (GOOD[:-1], "header says 2x28x28"),
    "trailing-bytes": (GOOD + b"\x00", "header says 2x28x28"),
    "html-page": (b"<!DOCTYPE html><html></html>", "magic number"),
}


@pytest.mark.parametrize("case", BAD_IDX)
def test_corrupt_idx_header_is_a_clear_one_line_error(tmp_path: Path, case: str) -> None:
    data, expected = BAD_IDX[case]
    path = write_gz(tmp_path / f"{case}.gz", data)
    with pytest.raises(DataError) as info:
        mnist.read_idx(path, 3)
    message = info.value.message
    assert message.startswith(f"{path} is not a valid IDX file: ")
    assert expected in message
    assert "\n" not in message and "delete it" in (info.value.hint or "")


def test_good_header_parses_exactly(tmp_path: Path) -> None:
    assert mnist.read_idx(write_gz(tmp_path / "good.gz", GOOD), 3).shape == (2, 28, 28)


@pytest.mark.parametrize("raw", [b"", b"not gzip at all", gzip.compress(GOOD)[:40]], ids=["empty", "plain", "cut"])
def test_undecompressable_file_is_a_clear_error(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "bad.gz"
    path.write_bytes(raw)
    with pytest.raises(DataError, match="not a valid IDX file") as info:
        mnist.read_idx(path, 3)
    assert "\n" not in info.value.message


# --------------------------------------------------------------------------- load and cache


def test_load_parses_once_then_reads_the_cache(
    fake_catalogue: tuple[Path, dict[str, torch.Tensor]], isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, arrays = fake_catalogue
    data = mnist.load(root, download=False, progress=False)
    assert torch.equal(data.train.images, arrays["train-images-idx3-ubyte.gz"])
    assert torch.equal(data.test.labels, arrays["t10k-labels-idx1-ubyte.gz"].long())
    assert data.train.labels.dtype == torch.int64 and len(data.train) == 30 and len(data.test) == 20
    flat = data.test.float_images()
    assert flat.shape == (20, 784) and float(flat.max()) <= 1.0
    assert torch.allclose(flat[3] * 255, data.test.images[3].flatten().float())
    assert len(list((isolated / "mnist" / "processed").glob("*.pt"))) == 1

    def no_parse(_: dict[str, Path]) -> dict[str, torch.Tensor]:
        raise AssertionError("parsed again although the cache holds the arrays")

    monkeypatch.setattr(mnist, "_decode", no_parse)
    again = mnist.load(root, download=False, progress=False)
    assert torch.equal(again.train.images, data.train.images)


def _recatalogue(root: Path, name: str, data: bytes, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Replace one of the fake files and re-catalogue it, so only the parser can object."""
    path = write_gz(root / "mnist" / name, data)
    files = tuple(
        Archive("mnist", a.filename, a.url, content_digest(path)) if a.filename == name else a
        for a in archives.CATALOGUE["mnist"]
    )
    monkeypatch.setitem(archives.CATALOGUE, "mnist", files)
    return path


def test_images_and_labels_of_different_lengths_are_refused(
    fake_catalogue: tuple[Path, dict[str, torch.Tensor]], isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = fake_catalogue
    _recatalogue(root, "t10k-labels-idx1-ubyte.gz", idx(torch.zeros(19, dtype=torch.uint8)), monkeypatch)
    with pytest.raises(DataError, match=r"holds 20 images but .* holds 19 labels"):
        mnist.load(root, download=False, progress=False)
    assert not list(isolated.glob("mnist/processed/*.pt"))


def test_labels_outside_0_to_9_are_refused(
    fake_catalogue: tuple[Path, dict[str, torch.Tensor]], isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = fake_catalogue
    path = _recatalogue(root, "train-labels-idx1-ubyte.gz", idx(torch.full((30,), 10, dtype=torch.uint8)), monkeypatch)
    with pytest.raises(DataError, match=r"label 10 outside 0\.\.9") as info:
        mnist.load(root, download=False, progress=False)
    assert str(path) in info.value.message


def test_missing_files_name_the_folders_searched(isolated: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"mnist archive train-images-idx3-ubyte\.gz not found") as info:
        mnist.load(tmp_path / "nowhere", download=False, progress=False)
    assert str(tmp_path / "nowhere" / "mnist") in info.value.message


# --------------------------------------------------------------------------- mirrors


def test_next_mirror_is_tried_when_the_first_fails(server: Server, isolated: Path, toy: tuple[Archive, bytes]) -> None:
    archive, data = toy
    (server.root / "good").mkdir()
    (server.root / "good" / "toy.zip").write_bytes(data)
    (server.root / "bad").mkdir()
    (server.root / "bad" / "toy.zip").write_bytes(data[: len(data) // 2])
    two = Archive(
        "toy",
        "toy.zip",
        f"{server.url}/gone/toy.zip",
        archive.content_sha256,
        mirrors=(f"{server.url}/bad/toy.zip", f"{server.url}/good/toy.zip"),
    )
    path = archives.fetch(two, progress=False)
    assert path.read_bytes() == data
    assert server.requests == ["/gone/toy.zip", "/bad/toy.zip", "/good/toy.zip"]
    assert cache_files(isolated / "toy") == [path]


def test_every_mirror_failing_is_one_line_naming_each(
    server: Server, isolated: Path, toy: tuple[Archive, bytes]
) -> None:
    archive, data = toy
    (server.root / "bad").mkdir()
    (server.root / "bad" / "toy.zip").write_bytes(data[:100])
    two = Archive(
        "toy", "toy.zip", f"{server.url}/gone/toy.zip", archive.content_sha256, mirrors=(f"{server.url}/bad/toy.zip",)
    )
    with pytest.raises(DataError) as info:
        archives.fetch(two, progress=False)
    message = info.value.message
    assert "\n" not in message
    assert f"{server.url}/gone/toy.zip failed: HTTP 404" in message
    assert f"{server.url}/bad/toy.zip is corrupt or truncated" in message
    assert cache_files(isolated) == []


def test_user_mirror_replaces_the_official_addresses(
    server: Server, isolated: Path, toy: tuple[Archive, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, _ = toy
    monkeypatch.setenv("METABENCH_MIRROR", server.url)
    two = Archive("toy", "toy.zip", "http://127.0.0.1:9/a", archive.content_sha256, mirrors=("http://127.0.0.1:9/b",))
    with pytest.raises(DataError, match="HTTP 404"):
        archives.fetch(two, progress=False)
    assert server.requests == ["/toy/toy.zip"]


# --------------------------------------------------------------------------- the real files


def _serve_real(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    (server.root / "mnist").mkdir()
    for archive in MNIST_FILES:
        os.symlink(shared("mnist", archive.filename), server.root / "mnist" / archive.filename)
    monkeypatch.setenv("METABENCH_MIRROR", server.url)


@pytest.mark.data
def test_real_mnist_has_the_published_shapes_and_label_counts(isolated: Path) -> None:
    folder = shared("mnist", MNIST_FILES[0].filename).parents[1]
    data = mnist.load(folder, download=False, progress=False)
    assert data.train.images.shape == (60_000, 28, 28) and data.test.images.shape == (10_000, 28, 28)
    assert data.train.images.dtype == torch.uint8 and int(data.train.images.max()) == 255
    assert data.train.labels.bincount().tolist() == TRAIN_COUNTS
    assert data.test.labels.bincount().tolist() == TEST_COUNTS


@pytest.mark.data
def test_data_download_verify_and_info_for_mnist(
    server: Server, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _serve_real(server, monkeypatch)
    downloaded = runner.invoke(app, ["data", "download", "mnist"], catch_exceptions=False)
    assert downloaded.exit_code == 0, downloaded.output
    assert sorted(server.requests) == sorted(f"/mnist/{a.filename}" for a in MNIST_FILES)
    in_cache = [isolated / "mnist" / a.filename for a in MNIST_FILES]
    assert sorted(p for p in cache_files(isolated / "mnist")) == sorted(in_cache)
    for archive, path in zip(MNIST_FILES, in_cache, strict=True):
        assert path.read_bytes() == shared("mnist", archive.filename).read_bytes()

    verified = runner.invoke(app, ["data", "verify", "mnist"], catch_exceptions=False)
    assert verified.exit_code == 0, verified.output
    assert sum(line.startswith("ok") for line in verified.output.splitlines()) == 4

    again = runner.invoke(app, ["data", "download", "mnist"], catch_exceptions=False)
    assert again.exit_code == 0 and len(server.requests) == 4

    assert len(mnist.load(download=False, progress=False).test) == 10_000
    info = runner.invoke(app, ["data", "info"], catch_exceptions=False)
    assert info.exit_code == 0
    assert "t10k-labels-idx1-ubyte.gz" in info.output and "mnist-uint8-" in info.output


def test_data_verify_reports_a_corrupt_mnist_file(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01" + b"\x00" * 8))
    result = runner.invoke(app, ["data", "verify", "mnist", "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert sum(line.startswith("missing") for line in lines) == 3
    assert sum(line.startswith("corrupt") for line in lines) == 1
    report = " ".join(result.output.split())  # rich wraps long lines at the console width
    assert f"corrupt {folder / 't10k-labels-idx1-ubyte.gz'}: " in report
    assert "expected content digest" in report


MANGLED = {
    "truncated": (lambda raw: raw[: len(raw) // 2], "corrupt or truncated"),
    "bit-flipped": (flip_gzip_bytes, "downloaded from"),
    "re-gzipped-other-bytes": (lambda raw: gzip.compress(gzip.decompress(raw)[:-1] + b"\x07"), "expected content"),
    "html-error-page": (lambda raw: b"<!DOCTYPE html><title>403 Forbidden</title>", "web page instead of"),
}


@pytest.mark.data
@pytest.mark.parametrize("case", MANGLED)
def test_mangled_download_is_refused_and_leaves_nothing(
    server: Server, isolated: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    mangle, expected = MANGLED[case]
    labels = next(a for a in MNIST_FILES if a.filename == "t10k-labels-idx1-ubyte.gz")
    _serve_real(server, monkeypatch)
    (server.root / "mnist" / labels.filename).unlink()
    serve(server, labels, mangle(shared("mnist", labels.filename).read_bytes()), monkeypatch)
    result = runner.invoke(app, ["data", "download", "mnist"])
    assert result.exit_code == 2
    error_lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and expected in error_lines[0], result.output
    assert server.url in error_lines[0]
    assert labels.filename in error_lines[0]
    left = [p.name for p in cache_files(isolated / "mnist")]
    assert sorted(left) == sorted(a.filename for a in MNIST_FILES if a != labels)
