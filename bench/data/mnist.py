"""MNIST (LeCun et al. 1998): 60,000 training and 10,000 test digits, 28x28 grayscale.

The four gzip-compressed IDX files come from the data folders or a verified download (see
:mod:`metabench.data.archives`); their digest is the sha256 of the uncompressed IDX bytes, the
reference checksums published for MNIST, so any faithful gzip wrapper verifies. They are parsed once
into ``uint8`` images and ``int64`` labels and cached keyed by those digests, so later runs load in
milliseconds. The learned-optimizer papers train small MLPs on it (Andrychowicz et al. 2016);
:func:`load_parts` gives it to the runner as labelled task sources (the HyperNetworks convnet).

A verified file cannot have a bad header, but the parser checks every header field anyway: a
catalogue entry edited by hand, or a file passed straight to :func:`read_idx`, must fail with a
message that names the file and the field, not with a reshape error deep in torch.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from metabench.data import archives
from metabench.data.cache import cached_tensors
from metabench.data.labelled import LabelledImages
from metabench.errors import DataError

IMAGE_SIZE = 28
CLASSES = 10
TRAIN_SIZE = 60_000
TEST_SIZE = 10_000

_UBYTE = 0x08
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


@dataclass(frozen=True)
class MnistSplit:
    """One part of MNIST: ``images`` ``uint8 [n, 28, 28]`` (ink high, as distributed), ``labels`` ``int64 [n]``."""

    images: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def float_images(self) -> Tensor:
        """Images scaled to [0, 1] and flattened to ``[n, 784]``, the MLP input of the learned-optimizer papers."""
        return self.images.reshape(len(self), -1).to(torch.float32) / 255.0


@dataclass(frozen=True)
class Mnist:
    train: MnistSplit
    test: MnistSplit


def _corrupt(path: Path, what: str) -> DataError:
    return DataError(
        f"{path} is not a valid IDX file: {what}",
        "delete it and run again to re-download it; `metabench data verify mnist` checks the files",
    )


def parse_idx(data: bytes, path: Path, ndim: int) -> Tensor:
    """The ``uint8`` array an IDX file's bytes hold, refusing any header that does not fit them.

    IDX: two zero bytes, a type code (``0x08`` = unsigned byte), the number of dimensions, then one
    big-endian ``int32`` per dimension, then the values; nothing may follow them.
    """
    if len(data) < 4:
        raise _corrupt(path, f"{len(data)} bytes, too short for the 4-byte IDX magic number")
    zero, kind, dims = struct.unpack(">HBB", data[:4])
    if zero != 0:
        raise _corrupt(path, f"magic number starts {data[:2].hex()}, not 0000")
    if kind != _UBYTE:
        raise _corrupt(path, f"type code 0x{kind:02x}, expected 0x{_UBYTE:02x} (unsigned byte)")
    if dims != ndim:
        raise _corrupt(path, f"{dims} dimensions, expected {ndim}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise _corrupt(path, f"{len(data)} bytes, too short for a {ndim}-dimensional header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = header
    count = 1
    for size in shape:
        count *= size
    expected += count
    if len(data) != expected:
        raise _corrupt(
            path, f"header says {'x'.join(map(str, shape))} values ({expected:,} bytes), file has {len(data):,}"
        )
    return torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8).view(*shape)


def read_idx(path: Path, ndim: int) -> Tensor:
    """Parse a gzip-compressed IDX file; a broken gzip stream or IDX header raises :class:`DataError`."""
    try:
        with gzip.open(path, "rb") as stream:
            data = stream.read()
    except (OSError, EOFError, zlib.error) as err:
        archives.forget_verified(path)
        raise _corrupt(path, f"cannot decompress it ({type(err).__name__}: {err})") from err
    try:
        return parse_idx(data, path, ndim)
    except DataError:
        archives.forget_verified(path)
        raise


def _split(images_path: Path, labels_path: Path) -> tuple[Tensor, Tensor]:
    images = read_idx(images_path, 3)
    labels = read_idx(labels_path, 1)
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise _corrupt(images_path, f"images are {images.shape[1]}x{images.shape[2]}, not {IMAGE_SIZE}x{IMAGE_SIZE}")
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds {labels.shape[0]} labels",
            "the two files come from different datasets; `metabench data verify mnist` checks them",
        )
    if labels.numel() and int(labels.max()) >= CLASSES:
        raise _corrupt(labels_path, f"label {int(labels.max())} outside 0..{CLASSES - 1}")
    return images, labels.to(torch.int64)


def _decode(paths: dict[str, Path]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for part, (images_name, labels_name) in _FILES.items():
        out[f"{part}_images"], out[f"{part}_labels"] = _split(paths[images_name], paths[labels_name])
    return out


def load(data_dir: Path | None = None, *, download: bool = True, progress: bool = True) -> Mnist:
    """Both parts of MNIST, from the cache or parsed from the verified IDX files."""
    files = archives.CATALOGUE["mnist"]
    paths = {a.filename: archives.fetch(a, data_dir, download=download, progress=progress) for a in files}
    digests = "-".join(a.content_sha256[:12] for a in files)
    tensors = cached_tensors(
        f"mnist/processed/mnist-uint8-{digests}.pt",
        lambda: _decode(paths),
        description="Parsing the MNIST IDX files (once)",
    )
    return Mnist(
        train=MnistSplit(tensors["train_images"], tensors["train_labels"]),
        test=MnistSplit(tensors["test_images"], tensors["test_labels"]),
    )


#: TensorFlow's tutorial loader (``read_data_sets``, ``validation_size=5000``): the first 5,000 training
#: images are the validation part, the other 55,000 the training part, the 10,000 test images the test
#: part. It is the split behind the 55,000 / 5,000 / 10,000 that HyperNetworks (Ha et al. 2017, App.
#: A.3.1) report; it is fixed (no seed), so every run and machine uses the same examples. Its training
#: part is padded to 30x30 and randomly cropped back to 28x28, the paper's augmentation.
TENSORFLOW_VALIDATION = 5_000
SPLITS = ("tensorflow",)


def load_parts(
    split: str, data_dir: Path | None = None, *, download: bool = True, progress: bool = True
) -> dict[str, LabelledImages]:
    """The parts of a named MNIST split as labelled task sources on the CPU."""
    if split not in SPLITS:
        raise ValueError(f"unknown MNIST split {split!r}")
    mnist = load(data_dir, download=download, progress=progress)
    v = TENSORFLOW_VALIDATION
    return {
        "train": LabelledImages("train", mnist.train.images[v:], mnist.train.labels[v:], CLASSES, pad=1),
        "val": LabelledImages("val", mnist.train.images[:v], mnist.train.labels[:v], CLASSES),
        "test": LabelledImages("test", mnist.test.images, mnist.test.labels, CLASSES),
    }
