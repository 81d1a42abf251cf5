"""Synthetic Omniglot and MNIST archives in the real files' formats, so image papers' smoke runs need no data.

:func:`write_archives` writes ``omniglot/images_background.zip``, ``omniglot/images_evaluation.zip`` and
the four ``mnist/*-ubyte.gz`` IDX files into a folder; passed as ``data_dir`` (``--data-dir``) they go
through the real readers: the content digest, the zip walk with its member-name pattern, PNG decoding
and the Lanczos resize (the drawings are 35x35, not the size any benchmark asks for), the IDX header
checks, and the preprocessing cache. Only the catalogue's digests differ, so :func:`catalogue` gives
the entries a test swaps in for ``metabench.data.archives.CATALOGUE``; the cache keys every decoded
array by those digests, so the synthetic arrays never mix with the real ones.

Omniglot's structure is the real one: the 50 alphabets of the two archives, in the global character
order, with their real character counts (the splits select by global id and by alphabet name; the
protonet split's validation alphabets and Flennerhag's alphabets of at least 20 characters exist), 20
drawings of each of the 1623 characters. A character is three random strokes; each drawing moves
every stroke end by a little and shifts the whole by up to two pixels, so drawings of one character
look alike, characters (and their rotations) differ, and a network can learn to tell them apart.
MNIST's digits are drawn the same way, ten templates with more jitter, 51,000 training images (the
learned optimizer's MLP problems cut the training images at 50,000, HyperNetworks' split at 5,000) and
1,000 test images.

Everything is a pure function of the fixed seeds below and the files are written byte-for-byte the same
(fixed zip timestamps, gzip mtime 0), so their digests, and the cache entries keyed by them, are stable.
"""

from __future__ import annotations

import gzip
import io
import json
import struct
import zipfile
from pathlib import Path

import torch
from torch import Tensor

from metabench.data import archives
from metabench.data.digests import content_digest

#: (archive, ((alphabet, characters), ...)): Omniglot's alphabets in global character order
OMNIGLOT_ALPHABETS: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] = (
    (
        "images_background",
        (
            ("Arcadian", 26),
            ("Armenian", 41),
            ("Asomtavruli_(Georgian)", 40),
            ("Balinese", 24),
            ("Bengali", 46),
            ("Blackfoot_(Canadian_Aboriginal_Syllabics)", 14),
            ("Braille", 26),
            ("Cyrillic", 33),
            ("Early_Aramaic", 22),
            ("Syriac_(Estrangelo)", 23),
            ("Anglo-Saxon_Futhorc", 29),
            ("Futurama", 26),
            ("Grantha", 43),
            ("Greek", 24),
            ("Gujarati", 48),
            ("Hebrew", 22),
            ("Japanese_(hiragana)", 52),
            ("Inuktitut_(Canadian_Aboriginal_Syllabics)", 16),
            ("Malay_(Jawi_-_Arabic)", 40),
            ("Japanese_(katakana)", 47),
            ("Korean", 40),
            ("Latin", 26),
            ("Alphabet_of_the_Magi", 20),
            ("Mkhedruli_(Georgian)", 41),
            ("Burmese_(Myanmar)", 34),
            ("N_Ko", 33),
            ("Ojibwe_(Canadian_Aboriginal_Syllabics)", 14),
            ("Sanskrit", 42),
            ("Tagalog", 17),
            ("Tifinagh", 55),
        ),
    ),
    (
        "images_evaluation",
        (
            ("Angelic", 20),
            ("Atemayar_Qelisayer", 26),
            ("Atlantean", 26),
            ("Aurek-Besh", 26),
            ("Avesta", 26),
            ("Ge_ez", 26),
            ("Glagolitic", 45),
            ("Gurmukhi", 45),
            ("Kannada", 41),
            ("Keble", 26),
            ("Malayalam", 47),
            ("Manipuri", 40),
            ("Mongolian", 30),
            ("Old_Church_Slavonic_(Cyrillic)", 45),
            ("Oriya", 46),
            ("Syriac_(Serto)", 23),
            ("Sylheti", 28),
            ("Tengwar", 25),
            ("Tibetan", 42),
            ("ULOG", 26),
        ),
    ),
)
DRAWINGS = 20
PNG_SIZE = 35  # the real drawings are 105x105; any size but the benchmarks' 28 and 20 exercises the resize
STROKES = 3
MNIST_TRAIN, MNIST_TEST = 51_000, 1_000
_ZIP_TIME = (2000, 1, 1, 0, 0, 0)


def strokes(templates: Tensor, copies: int, jitter: float, shift: float, generator: torch.Generator) -> Tensor:
    """``copies`` drawings of each template ``[n, STROKES, 2, 2]`` (segment ends in [0, 1]^2):
    ``[n, copies, STROKES, 2, 2]``, every end moved by ``jitter`` and each drawing shifted by up to ``shift``."""
    n = templates.shape[0]
    ends = templates.unsqueeze(1) + jitter * torch.randn(n, copies, *templates.shape[1:], generator=generator)
    moved = (2 * torch.rand(n, copies, 1, 1, 2, generator=generator) - 1) * shift
    return ends + moved


def render(segments: Tensor, size: int, width: float) -> Tensor:
    """Ink ``float [..., size, size]`` in [0, 1] of line segments ``[..., STROKES, 2, 2]`` (ends in [0, 1]^2):
    1 within ``width`` of a segment, fading to 0 over one more pixel (a pen with a soft edge)."""
    flat = segments.reshape(-1, *segments.shape[-3:])
    centres = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    y, x = (axis.reshape(1, -1) for axis in torch.meshgrid(centres, centres, indexing="ij"))
    out = torch.empty(flat.shape[0], size * size)
    for start in range(0, flat.shape[0], 512):  # chunks that stay in the cache
        chunk, nearest = flat[start : start + 512], None
        for k in range(chunk.shape[1]):
            ax, ay = chunk[:, k, 0, :1], chunk[:, k, 0, 1:]
            dx, dy = chunk[:, k, 1, :1] - ax, chunk[:, k, 1, 1:] - ay
            rx, ry = x - ax, y - ay
            along = ((rx * dx + ry * dy) / (dx * dx + dy * dy).clamp_min(1e-8)).clamp_(0, 1)
            squared = (rx - along * dx).square_() + (ry - along * dy).square_()
            nearest = squared if nearest is None else torch.minimum(nearest, squared, out=nearest)
        assert nearest is not None
        out[start : start + 512] = (width * size + 1.0 - nearest.sqrt_() * size).clamp_(0, 1)
    return out.view(*segments.shape[:-3], size, size)


def _png(ink: Tensor) -> bytes:
    """A 1-bit PNG as Omniglot ships them: background white (1), ink black (0)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray((ink < 0.5).numpy()).save(buffer, format="PNG")
    return buffer.getvalue()


def write_omniglot(folder: Path) -> None:
    """``folder/omniglot/images_{background,evaluation}.zip`` with every drawing of the 1623 characters."""
    generator = torch.Generator().manual_seed(1623)
    (folder / "omniglot").mkdir(parents=True, exist_ok=True)
    character = 0
    for archive, alphabets in OMNIGLOT_ALPHABETS:
        with zipfile.ZipFile(folder / "omniglot" / f"{archive}.zip", "w", zipfile.ZIP_STORED) as zf:
            for alphabet, count in alphabets:
                templates = 0.15 + 0.7 * torch.rand(count, STROKES, 2, 2, generator=generator)
                ink = render(strokes(templates, DRAWINGS, 0.03, 2 / PNG_SIZE, generator), PNG_SIZE, 0.04)
                for c in range(count):
                    for d in range(DRAWINGS):
                        name = f"{archive}/{alphabet}/character{c + 1:02d}/{character + c + 1:04d}_{d + 1:02d}.png"
                        zf.writestr(zipfile.ZipInfo(name, _ZIP_TIME), _png(ink[c, d]))
                character += count


def _idx(values: Tensor) -> bytes:
    """IDX bytes of a ``uint8`` array: magic (0, 0x08, ndim), big-endian dimensions, the values."""
    header = struct.pack(">HBB", 0, 0x08, values.dim()) + struct.pack(f">{values.dim()}I", *values.shape)
    return header + values.contiguous().numpy().tobytes()


def _gzip(path: Path, data: bytes) -> None:
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as stream:
        stream.write(data)


def write_mnist(folder: Path) -> None:
    """``folder/mnist/`` with the four IDX files: ten stroke templates as the digits, ink high."""
    generator = torch.Generator().manual_seed(784)
    templates = 0.2 + 0.6 * torch.rand(10, STROKES, 2, 2, generator=generator)
    (folder / "mnist").mkdir(parents=True, exist_ok=True)
    for prefix, count in (("train", MNIST_TRAIN), ("t10k", MNIST_TEST)):
        labels = torch.randint(0, 10, (count,), generator=generator)
        drawn = strokes(templates[labels], 1, 0.04, 3 / 28, generator)[:, 0]
        pixels = (render(drawn, 28, 0.04) * 255).round().to(torch.uint8)
        _gzip(folder / "mnist" / f"{prefix}-images-idx3-ubyte.gz", _idx(pixels))
        _gzip(folder / "mnist" / f"{prefix}-labels-idx1-ubyte.gz", _idx(labels.to(torch.uint8)))


#: written last by :func:`write_archives`: the archives' content digests, and a sign that they are complete
DIGESTS = "digests.json"


def write_archives(folder: Path) -> Path:
    """Both datasets' synthetic archives under ``folder`` (a ``data_dir``), then their digests."""
    write_omniglot(folder)
    write_mnist(folder)
    digests = {
        dataset: {a.filename: content_digest(folder / dataset / a.filename) for a in archives.CATALOGUE[dataset]}
        for dataset in ("omniglot", "mnist")
    }
    (folder / DIGESTS).write_text(json.dumps(digests, indent=1), encoding="utf-8")
    return folder


def catalogue(folder: Path) -> dict[str, tuple[archives.Archive, ...]]:
    """Catalogue entries for the synthetic archives under ``folder``: the real files' names with the
    synthetic files' digests, and no address (nothing is ever downloaded in their place)."""
    digests = json.loads((folder / DIGESTS).read_text(encoding="utf-8"))
    return {
        dataset: tuple(archives.Archive(dataset, name, "synthetic://", digest) for name, digest in files.items())
        for dataset, files in digests.items()
    }
