"""miniImageNet (Vinyals et al. 2016): 100 ImageNet classes of 600 images, read from a folder the user supplies.

Its licence forbids redistribution, so there is no download: the user puts the images and the split's
csv files in ``<folder>/<dirname>/``, in the layout of Ravi & Larochelle's release::

    miniimagenet/
        images/            the JPEG or PNG files
        train.csv          header ``filename,label``: a file name relative to images/, a class id
        val.csv            (such as ``n01532829``), one line per image
        test.csv

``<folder>`` is ``--data-dir``, then ``$METABENCH_DATA``, then the metabench cache (see
:mod:`metabench.paths`), as for the archives of the other datasets.

The csv files are read with the Hugging Face ``datasets`` library (its cache lives in the metabench
cache, under ``huggingface/``), and the images decoded by the same ``Dataset.map`` that reads a user's
image folder (:mod:`metabench.data.imagefolder`; Ravi's layout is a csv-listed case of it). Each image
is converted to RGB and resized once to ``S x S`` (84 by default) with PIL's **Lanczos** filter, the one
metabench's Omniglot uses too; each part is stored as one
``uint8 [classes, examples, 3, S, S]`` tensor, classes sorted by class id and examples in csv order. The
cache is keyed by a digest of the csv files' bytes and by ``S``, so an edited split rebuilds. (Image files
replaced under unchanged csv files are not noticed: delete ``<cache>/miniimagenet/processed`` then.)

Splits, each a folder name and its parts:

``ravi``      ``miniimagenet/``: Ravi & Larochelle's 64 ``train``, 16 ``val``, 20 ``test`` classes, the
              split nearly every later paper used.
``vinyals``   ``miniimagenet-vinyals/``: Vinyals et al.'s own 80 / 20 classes, the same layout with
              ``train.csv`` and ``test.csv`` (``val.csv`` optional). Its numbers are not comparable
              with the Ravi split's.
"""

from __future__ import annotations

import csv
import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from metabench.data.cache import cached_tensors
from metabench.errors import DataError
from metabench.paths import cache_dir, data_dirs

IMAGE_SIZE = 84
HEADER = ("filename", "label")
_LICENCE = "miniImageNet is not downloaded automatically: its licence forbids redistribution"


@dataclass(frozen=True)
class Layout:
    """Where a split's folder sits (``<folder>/<dirname>``) and which csv files it must and may hold."""

    dirname: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()


SPLITS: dict[str, Layout] = {
    "ravi": Layout("miniimagenet", ("train", "val", "test")),
    "vinyals": Layout("miniimagenet-vinyals", ("train", "test"), ("val",)),
}


@dataclass(frozen=True)
class Part:
    """One part's images, ``uint8 [classes, examples, 3, S, S]``, and the class id of each row."""

    images: Tensor
    classes: tuple[str, ...]


def _layout(split: str) -> Layout:
    if split not in SPLITS:  # load_parts checks names first; this guards direct callers
        raise DataError(f"miniimagenet has no split {split!r}", f"known: {', '.join(SPLITS)}")
    return SPLITS[split]


def _hint(layout: Layout, first: Path) -> str:
    files = ", ".join(f"{part}.csv" for part in layout.required)
    optional = "".join(f" ({part}.csv optional)" for part in layout.optional)
    return (
        f"put images/ plus {files}{optional} with the header filename,label (filename relative to images/, "
        f"label a class id such as n01532829) in {first / layout.dirname}, or pass --data-dir (or set "
        f"METABENCH_DATA to) the folder that holds {layout.dirname}/; {_LICENCE}"
    )


def locate(split: str = "ravi", data_dir: Path | None = None) -> Path:
    """The first ``<folder>/<dirname>`` holding the split's csv files, searching ``paths.data_dirs``.

    Raises :class:`DataError` naming every place looked, what was missing where a folder exists, and
    exactly what to put where.
    """
    layout = _layout(split)
    folders = data_dirs(data_dir)
    incomplete: list[str] = []
    for folder in folders:
        candidate = folder / layout.dirname
        if not candidate.is_dir():
            continue
        missing = [f"{part}.csv" for part in layout.required if not (candidate / f"{part}.csv").is_file()]
        if not (candidate / "images").is_dir():
            missing.append("images/")
        if not missing:
            return candidate
        incomplete.append(f"{candidate} lacks {', '.join(missing)}")
    searched = ", ".join(str(folder / layout.dirname) for folder in folders)
    found = f" ({'; '.join(incomplete)})" if incomplete else ""
    raise DataError(f"miniImageNet ({split} split) not found; looked in: {searched}{found}", _hint(layout, folders[0]))


def _parts(root: Path, layout: Layout) -> list[str]:
    return [*layout.required, *(part for part in layout.optional if (root / f"{part}.csv").is_file())]


def csv_digest(root: Path, parts: list[str]) -> str:
    """sha256 over each part's name and its csv file's bytes, length-prefixed so fields cannot run together."""
    h = hashlib.sha256()
    for part in parts:
        for field in (part.encode("utf-8"), (root / f"{part}.csv").read_bytes()):
            h.update(struct.pack(">Q", len(field)) + field)
    return h.hexdigest()


def _read_csv(path: Path, hf_cache: Path) -> tuple[Any, list[str], list[str]]:
    """One split file as a ``datasets.Dataset``, and its filename and label columns as lists."""
    import datasets

    with path.open(newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle), [])
    if tuple(cell.strip() for cell in header) != HEADER:
        raise DataError(
            f"{path}: the header is {','.join(header) or '(empty file)'!r}, not 'filename,label'",
            "each split file starts with the line filename,label",
        )
    features = datasets.Features({"filename": datasets.Value("string"), "label": datasets.Value("string")})
    table = datasets.load_dataset(
        "csv", data_files={"rows": str(path)}, split="rows", features=features, cache_dir=str(hf_cache)
    )
    filenames, labels = list(table["filename"]), list(table["label"])
    if not filenames:
        raise DataError(f"{path} lists no images", "one line per image: filename,label")
    blank = next((i for i, (f, c) in enumerate(zip(filenames, labels, strict=True)) if not f or not c), None)
    if blank is not None:
        raise DataError(f"{path}: line {blank + 2} has an empty filename or label", "each line is filename,label")
    return table, filenames, labels


def _class_slots(path: Path, labels: list[str]) -> tuple[list[str], list[tuple[int, int]], int]:
    """Sorted class ids, each row's (class, example) slot in csv order, and the examples per class."""
    classes = sorted(set(labels))
    row_of = {label: i for i, label in enumerate(classes)}
    counts = [0] * len(classes)
    slots = []
    for label in labels:
        slots.append((row_of[label], counts[row_of[label]]))
        counts[row_of[label]] += 1
    if len(set(counts)) > 1:
        most = max(counts)
        short = next(i for i, count in enumerate(counts) if count != most)
        raise DataError(
            f"{path}: class {classes[short]} has {counts[short]} images but {classes[counts.index(most)]} has "
            f"{most}; every class of a part needs the same number (the real data has 600 per class)",
            "fix the csv file so each class lists equally many images",
        )
    return classes, slots, counts[0]


def _decode_part(root: Path, part: str, image_size: int, hf_cache: Path) -> tuple[Tensor, list[str]]:
    """One part's images as ``uint8 [classes, examples, 3, S, S]``: the csv's rows get an image column
    (``datasets.Image``) and are decoded and resized by the same ``Dataset.map`` as a user's image folder
    (:func:`metabench.data.imagefolder.decode`), in parallel for a large part."""
    from metabench.data import imagefolder

    path = root / f"{part}.csv"
    table, filenames, labels = _read_csv(path, hf_cache)
    classes, slots, per_class = _class_slots(path, labels)
    images_dir = (root / "images").resolve()
    files = [images_dir / name for name in filenames]
    missing = [file for file in files if not file.is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise DataError(
            f"{path} names an image that does not exist: {missing[0]}{more}",
            f"every filename in {path.name} is relative to {images_dir}",
        )
    decoded = imagefolder.decode(table.add_column("image", [str(file) for file in files]), image_size, "RGB")
    failed = next(((f, e) for f, e in zip(decoded["file"], decoded["error"], strict=True) if e), None)
    if failed is not None:
        raise DataError(
            f"{path}: cannot read image {failed[0]} ({failed[1]})",
            "replace the file with a readable JPEG or PNG, or remove its line",
        )
    out = torch.zeros(len(classes), per_class, 3, image_size, image_size, dtype=torch.uint8)
    for pixels, (row, example) in zip(decoded["pixels"], slots, strict=True):
        flat = torch.frombuffer(bytearray(pixels), dtype=torch.uint8)
        out[row, example] = flat.view(image_size, image_size, 3).permute(2, 0, 1)
    return out, classes


def _decode(root: Path, parts: list[str], image_size: int) -> dict[str, Any]:
    import datasets

    hf_cache = cache_dir() / "huggingface" / "datasets"
    bars_were_on = not datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()  # the cache's status line says what is happening
    try:
        tensors: dict[str, Any] = {}
        for part in parts:
            tensors[part], classes = _decode_part(root, part, image_size, hf_cache)
            tensors[f"classes/{part}"] = "\n".join(classes)
        return tensors
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()


def load_images(
    split: str = "ravi", image_size: int = IMAGE_SIZE, data_dir: Path | None = None, *, progress: bool = True
) -> dict[str, Part]:
    """Every part of ``split`` at ``image_size``, from the cache or decoded once from the user's folder.

    ``progress`` is accepted for symmetry with the other datasets; the one-time build shows a status line.
    """
    layout = _layout(split)
    if image_size < 1:
        raise DataError(f"miniImageNet image size must be positive, got {image_size}")
    root = locate(split, data_dir)
    parts = _parts(root, layout)
    digest = csv_digest(root, parts)[:16]
    tensors = cached_tensors(
        f"miniimagenet/processed/{layout.dirname}-{image_size}px-lanczos-{digest}.pt",
        lambda: _decode(root, parts, image_size),
        description=f"Decoding miniImageNet ({split} split, {root}) at {image_size}x{image_size} (once)",
    )
    return {part: Part(tensors[part], tuple(str(tensors[f"classes/{part}"]).split("\n"))) for part in parts}
