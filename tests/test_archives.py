"""Archive digests, lookup and downloads, against a local HTTP server on 127.0.0.1.

The failure-mode tests use a small synthetic zip so they run in milliseconds; only the catalogue
checks and one end-to-end download read the real archives in the shared data folder.
"""

from __future__ import annotations

import functools
import gzip
import io
import os
import random
import shutil
import socket
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from metabench.data import archives
from metabench.data.archives import (
    CATALOGUE,
    MNIST_FILES,
    OMNIGLOT_BACKGROUND,
    OMNIGLOT_EVALUATION,
    Archive,
    content_digest,
    fetch,
    locate,
    verify,
)
from metabench.errors import DataError

SHARED_DATA = Path(os.environ.get("METABENCH_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))

MNIST_IDX_SHA256 = {
    "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

TOY_MEMBERS = {
    "toy/a.txt": b"alpha " * 2000,
    "toy/b/c.bin": bytes(range(256)) * 40,
    "toy/empty": b"",
}


def shared(*parts: str) -> Path:
    """A file of the shared data folder, or a skip saying where it was looked for."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"real data not found at {path} (set METABENCH_DATA to the shared data folder)")
    return path


def write_zip(path: Path, members: dict[str, bytes], *, level: int = 6, dirs: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as zf:
        if dirs:
            for name in sorted({n.rsplit("/", 1)[0] + "/" for n in members if "/" in n}):
                zf.writestr(name, b"")
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def cache_files(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob("*") if p.is_file())


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own cache and sees no data folder or mirror from the environment."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("METABENCH_CACHE", str(cache))
    monkeypatch.delenv("METABENCH_DATA", raising=False)
    monkeypatch.delenv("METABENCH_MIRROR", raising=False)
    return cache


@dataclass
class Server:
    url: str
    root: Path
    requests: list[str] = field(default_factory=list)
    cut_body_at: int | None = None


class _Handler(SimpleHTTPRequestHandler):
    """Serves the fixture's folder; with ``cut_body_at`` set, announces the full length but stops early."""

    state: Server

    def do_GET(self) -> None:
        self.state.requests.append(self.path)
        if self.state.cut_body_at is None:
            super().do_GET()
            return
        body = self.send_head()
        if body is not None:
            with body:
                self.wfile.write(body.read(self.state.cut_body_at))
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "www"
    root.mkdir()
    state = Server(url="", root=root)
    handler = type("Handler", (_Handler,), {"state": state})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def toy(tmp_path: Path) -> tuple[Archive, bytes]:
    """A small catalogued zip and its bytes: the stand-in for a real archive in failure-mode tests."""
    path = write_zip(tmp_path / "src" / "toy.zip", TOY_MEMBERS)
    archive = Archive("toy", "toy.zip", "https://example.invalid/toy/toy.zip", content_digest(path))
    return archive, path.read_bytes()


def serve(server: Server, archive: Archive, data: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """Put ``data`` where the mirror layout expects ``archive`` and point METABENCH_MIRROR at it."""
    target = server.root / archive.dataset / archive.filename
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    monkeypatch.setenv("METABENCH_MIRROR", server.url + "/")


def flip_member_bytes(data: bytes, member: str) -> bytes:
    """Same length, a few bytes inverted in the middle of one member's compressed data.

    The offset comes from the member's local header, so the flip never lands in a field (a timestamp,
    say) that the content digest rightly ignores.
    """
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = zf.getinfo(member)
    header = info.header_offset
    name_len = int.from_bytes(data[header + 26 : header + 28], "little")
    extra_len = int.from_bytes(data[header + 28 : header + 30], "little")
    middle = header + 30 + name_len + extra_len + info.compress_size // 2
    flipped = bytearray(data)
    for i in range(middle, middle + 4):
        flipped[i] ^= 0xFF
    return bytes(flipped)


def flip_gzip_bytes(data: bytes) -> bytes:
    """Same length, a few bytes inverted in the middle of the deflate stream (past the header)."""
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 4]) + data[middle + 4 :]


# --------------------------------------------------------------------------- digests


def test_catalogue_lists_every_archive() -> None:
    assert CATALOGUE["omniglot"] == (OMNIGLOT_BACKGROUND, OMNIGLOT_EVALUATION)
    assert CATALOGUE["mnist"] == MNIST_FILES
    assert [a.filename for a in MNIST_FILES] == list(MNIST_IDX_SHA256)
    for archive in (*CATALOGUE["omniglot"], *MNIST_FILES):
        assert archive.url.endswith("/" + archive.filename)
        assert len(archive.content_sha256) == 64


@pytest.mark.data
@pytest.mark.parametrize("archive", [OMNIGLOT_BACKGROUND, OMNIGLOT_EVALUATION], ids=lambda a: a.filename)
def test_real_omniglot_digest_matches_catalogue(archive: Archive) -> None:
    assert content_digest(shared("omniglot", archive.filename)) == archive.content_sha256


@pytest.mark.data
def test_rezipped_omniglot_has_same_digest_and_edited_copy_differs(tmp_path: Path) -> None:
    source = shared("omniglot", OMNIGLOT_EVALUATION.filename)
    with zipfile.ZipFile(source) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist() if not i.is_dir()}
    reordered = dict(reversed(members.items()))
    rezipped = write_zip(tmp_path / "re" / "images_evaluation.zip", reordered, level=1)
    assert rezipped.read_bytes() != source.read_bytes()
    assert content_digest(rezipped) == OMNIGLOT_EVALUATION.content_sha256

    first = next(iter(members))
    edited = dict(members, **{first: members[first][:-1] + bytes([members[first][-1] ^ 1])})
    changed = write_zip(tmp_path / "ed" / "images_evaluation.zip", edited, level=1)
    assert content_digest(changed) != OMNIGLOT_EVALUATION.content_sha256


def test_digest_ignores_order_level_and_directory_entries(tmp_path: Path) -> None:
    base = content_digest(write_zip(tmp_path / "a.zip", TOY_MEMBERS))
    reordered = dict(reversed(TOY_MEMBERS.items()))
    assert content_digest(write_zip(tmp_path / "b.zip", reordered, level=9, dirs=True)) == base
    changed = dict(TOY_MEMBERS, **{"toy/empty": b"x"})
    assert content_digest(write_zip(tmp_path / "c.zip", changed)) != base
    renamed = {k.replace("a.txt", "A.txt"): v for k, v in TOY_MEMBERS.items()}
    assert content_digest(write_zip(tmp_path / "d.zip", renamed)) != base


def test_digest_framing_keeps_name_and_bytes_apart(tmp_path: Path) -> None:
    one = content_digest(write_zip(tmp_path / "one.zip", {"a": b"bc"}))
    two = content_digest(write_zip(tmp_path / "two.zip", {"ab": b"c"}))
    split = content_digest(write_zip(tmp_path / "split.zip", {"a": b"b", "c": b""}))
    assert len({one, two, split}) == 3


@pytest.mark.data
@pytest.mark.parametrize("archive", MNIST_FILES, ids=lambda a: a.filename)
def test_real_mnist_gz_digest_is_sha256_of_idx(archive: Archive) -> None:
    expected = MNIST_IDX_SHA256[archive.filename]
    assert archive.content_sha256 == expected
    assert content_digest(shared("mnist", archive.filename)) == expected


GZ_SAMPLE = gzip.compress(random.Random(0).randbytes(20_000) + b"idx" * 5_000, mtime=0)

UNDECODABLE = {
    "html-saved-as.zip": lambda toy: b"<html><body>Not Found</body></html>",
    "truncated.zip": lambda toy: toy[: len(toy) // 2],
    "bit-flipped.zip": lambda toy: flip_member_bytes(toy, "toy/a.txt"),
    "truncated.gz": lambda toy: GZ_SAMPLE[: len(GZ_SAMPLE) // 2],
    "bit-flipped.gz": lambda toy: flip_gzip_bytes(GZ_SAMPLE),
    "html-saved-as.gz": lambda toy: b"<html></html>",
    "empty.gz": lambda toy: b"",
}


@pytest.mark.parametrize("name", UNDECODABLE)
def test_undecodable_files_raise_data_error(tmp_path: Path, toy: tuple[Archive, bytes], name: str) -> None:
    path = tmp_path / name
    path.write_bytes(UNDECODABLE[name](toy[1]))
    with pytest.raises(DataError, match="corrupt or truncated") as info:
        content_digest(path)
    assert str(path) in info.value.message
    assert "delete it" in (info.value.hint or "")


def test_verify_reports_expected_and_found(tmp_path: Path, toy: tuple[Archive, bytes]) -> None:
    archive, _ = toy
    other = write_zip(tmp_path / "other.zip", {"x": b"y"})
    with pytest.raises(DataError) as info:
        verify(archive, other)
    assert archive.content_sha256[:12] in info.value.message
    assert content_digest(other)[:12] in info.value.message


# --------------------------------------------------------------------------- locating


def test_locate_order_data_dir_then_env_then_cache(
    tmp_path: Path, isolated: Path, toy: tuple[Archive, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, data = toy
    explicit, env = tmp_path / "explicit", tmp_path / "env"
    for folder in (explicit, env, isolated):
        (folder / "toy").mkdir(parents=True)
        (folder / "toy" / "toy.zip").write_bytes(data)
    monkeypatch.setenv("METABENCH_DATA", str(env))

    assert locate(archive, explicit) == explicit / "toy" / "toy.zip"
    (explicit / "toy" / "toy.zip").unlink()
    assert locate(archive, explicit) == env / "toy" / "toy.zip"
    (env / "toy" / "toy.zip").unlink()
    assert locate(archive, explicit) == isolated / "toy" / "toy.zip"
    (isolated / "toy" / "toy.zip").unlink()
    assert locate(archive, explicit) is None


def test_fetch_without_download_lists_folders_searched(
    tmp_path: Path, isolated: Path, toy: tuple[Archive, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METABENCH_DATA", str(tmp_path / "env"))
    with pytest.raises(DataError, match="not found") as info:
        fetch(toy[0], tmp_path / "explicit", download=False)
    for folder in (tmp_path / "explicit", tmp_path / "env", isolated):
        assert str(folder / "toy") in info.value.message
    assert "--data-dir" in (info.value.hint or "")


def test_fetch_refuses_corrupt_file_in_data_dir(
    tmp_path: Path, server: Server, toy: tuple[Archive, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, data = toy
    serve(server, archive, data, monkeypatch)
    bad = tmp_path / "data" / "toy" / "toy.zip"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as info:
        fetch(archive, tmp_path / "data", progress=False)
    assert str(bad) in info.value.message
    assert server.requests == []


def test_verification_is_cached_until_the_file_changes(
    tmp_path: Path, isolated: Path, toy: tuple[Archive, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, data = toy
    path = tmp_path / "data" / "toy" / "toy.zip"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    assert fetch(archive, tmp_path / "data", download=False) == path
    assert len(list((isolated / "verified").iterdir())) == 1

    def no_digest(_: Path) -> str:
        raise AssertionError("digest recomputed although the file is unchanged")

    with monkeypatch.context() as patched:
        patched.setattr(archives, "content_digest", no_digest)
        assert fetch(archive, tmp_path / "data", download=False) == path

    path.write_bytes(flip_member_bytes(data, "toy/a.txt"))
    os.utime(path, ns=(1, 1))
    with pytest.raises(DataError, match="corrupt or truncated"):
        fetch(archive, tmp_path / "data", download=False)


# --------------------------------------------------------------------------- downloading


@pytest.mark.data
def test_download_real_archive_through_mirror_then_reuse_cache(
    server: Server, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = shared("omniglot", OMNIGLOT_EVALUATION.filename)
    (server.root / "omniglot").mkdir()
    os.symlink(source, server.root / "omniglot" / OMNIGLOT_EVALUATION.filename)
    monkeypatch.setenv("METABENCH_MIRROR", server.url)

    path = fetch(OMNIGLOT_EVALUATION, progress=False)
    assert path == isolated / "omniglot" / "images_evaluation.zip"
    assert path.read_bytes() == source.read_bytes()
    assert server.requests == ["/omniglot/images_evaluation.zip"]
    assert [p.name for p in (isolated / "omniglot").iterdir()] == ["images_evaluation.zip"]

    assert fetch(OMNIGLOT_EVALUATION, progress=False) == path
    assert len(server.requests) == 1


def test_download_with_progress_bar(
    server: Server, isolated: Path, toy: tuple[Archive, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, data = toy
    serve(server, archive, data, monkeypatch)
    path = fetch(archive, progress=True)
    assert path == isolated / "toy" / "toy.zip"
    assert path.read_bytes() == data


def _assert_clean_failure(archive: Archive, isolated: Path, match: str) -> DataError:
    with pytest.raises(DataError, match=match) as info:
        fetch(archive, progress=False)
    assert cache_files(isolated) == []
    assert "by hand" in (info.value.hint or "")
    return info.value


def test_truncated_file_is_refused(
    server: Server, isolated: Path, toy: tuple[Archive, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, data = toy
    serve(server, archive, data[: len(data) // 2], monkeypatch)
    err = _assert_clean_failure(archive, isolated, "corrupt or truncated")
    assert server.url in err.message


def test_connection_cut_short_is_refused(
    server: Server, isolated: Path, toy: tuple[Archive, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, data = toy
    serve(server, archive, data, monkeypatch)
    server.cut_body_at = len(data) // 2
    _assert_clean_failure(archive, isolated, "stopped")


def test_bit_flipped_file_is_refused(
    server: Server, isolated: Path, toy: tuple[Archive, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, data = toy
    flipped = flip_member_bytes(data, "toy/b/c.bin")
    assert len(flipped) == len(data) and flipped != data
    serve(server, archive, flipped, monkeypatch)
    _assert_clean_failure(archive, isolated, "downloaded from")


def test_wrong_contents_are_refused(
    server: Server,
    isolated: Path,
    toy: tuple[Archive, bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    archive, _ = toy
    other = write_zip(tmp_path / "other.zip", {"toy/a.txt": b"something else"}).read_bytes()
    serve(server, archive, other, monkeypatch)
    _assert_clean_failure(archive, isolated, "expected content digest")


def test_http_404_is_refused(
    server: Server, isolated: Path, toy: tuple[Archive, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METABENCH_MIRROR", server.url)
    err = _assert_clean_failure(toy[0], isolated, "HTTP 404")
    assert f"{server.url}/toy/toy.zip" in err.message


def test_html_page_instead_of_zip_is_refused(
    server: Server, isolated: Path, toy: tuple[Archive, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    page = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>...</body></html>"
    serve(server, toy[0], page, monkeypatch)
    _assert_clean_failure(toy[0], isolated, "web page instead of toy.zip")


def test_connection_refused_is_refused(
    isolated: Path, toy: tuple[Archive, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("METABENCH_MIRROR", f"http://127.0.0.1:{port}")
    _assert_clean_failure(toy[0], isolated, "could not reach")


def test_silent_server_times_out(tmp_path: Path, toy: tuple[Archive, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        monkeypatch.setenv("METABENCH_MIRROR", f"http://127.0.0.1:{sock.getsockname()[1]}")
        with pytest.raises(DataError, match="timed out"):
            archives.download(toy[0], tmp_path / "dest", progress=False, timeout=0.3)
    assert list((tmp_path / "dest").iterdir()) == []


def test_interrupt_removes_partial_file_and_propagates(
    server: Server, tmp_path: Path, toy: tuple[Archive, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, data = toy
    serve(server, archive, data, monkeypatch)
    seen: list[Path] = []

    def interrupted(path: Path) -> str:
        seen.append(path)
        assert path.is_file() and path.parent == tmp_path / "dest"
        raise KeyboardInterrupt

    monkeypatch.setattr(archives, "content_digest", interrupted)
    with pytest.raises(KeyboardInterrupt):
        archives.download(archive, tmp_path / "dest", progress=False)
    assert len(seen) == 1
    assert list((tmp_path / "dest").iterdir()) == []


def test_download_replaces_nothing_on_failure(
    server: Server, tmp_path: Path, toy: tuple[Archive, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, data = toy
    dest = tmp_path / "dest"
    dest.mkdir()
    shutil.copyfile(tmp_path / "src" / "toy.zip", dest / "toy.zip")
    serve(server, archive, data[:100], monkeypatch)
    with pytest.raises(DataError):
        archives.download(archive, dest, progress=False)
    assert [p.name for p in dest.iterdir()] == ["toy.zip"]
    assert (dest / "toy.zip").read_bytes() == data
