"""Your own images: a folder of class subfolders, as the frozen-episode class banks every method uses.

``metabench run PAPER --images FOLDER`` runs an image-based paper's method (its model, algorithm and
profile) on the user's classes instead of the paper's dataset. The folder is read with the Hugging Face
``datasets`` image-folder builder::

    FOLDER/                        or      FOLDER/
        cat/  0001.png ...                     train/  cat/ ...  dog/ ...
        dog/  a.jpg ...                        val/    fox/ ...            (optional; also validation/)
        ...                                    test/   owl/ ...

Every image is decoded, converted to grey (``L``) or RGB as the method's benchmark expects (Omniglot
methods grey, miniImageNet methods RGB) and resized to the benchmark's size with Lanczos, in parallel
(``Dataset.map(num_proc=...)``). The decoded pixels are saved as an Arrow dataset in the metabench cache,
keyed by a sha256 over every image's path and bytes (so a changed, added or removed image rebuilds it)
and by the size and colour mode.

Classes go to the parts ``train``, ``val`` and ``test`` by the folder's ``train/``, ``val/``, ``test/``
subfolders when it has them; otherwise by a seeded rule (:data:`SPLIT_RULE`: the sorted class names
permuted by ``torch.Generator().manual_seed(0)``, the first 60% to train, the next 20% to val, the rest to
test), recorded in the result with every class of every part. A class bank holds the same number of
images per class, so each part keeps, per class, the first ``n`` images by file name, ``n`` the smallest
class's count (recorded too). Test episodes are frozen and digested like Omniglot's, and the result is
the user's dataset: no paper number, no verdict.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from metabench.errors import DataError

if TYPE_CHECKING:
    from metabench.spec import Benchmark, Profile

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
#: subfolder names that state a part themselves (``datasets`` calls ``val`` ``validation``)
PART_FOLDERS = {"train": "train", "val": "val", "validation": "val", "test": "test"}
SPLIT_SEED = 0
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)
SPLIT_RULE = "sorted class names permuted by torch.Generator().manual_seed(0): first 60% train, next 20% val, rest test"
#: the datasets an image-based benchmark's method may run on with --images, and the colour mode it expects
IMAGE_DATASETS = {"omniglot": "L", "miniimagenet": "RGB"}
#: the registry's datasets for user images, by colour mode
DATASET_OF_MODE = {"L": "imagefolder", "RGB": "imagefolder-rgb"}


@dataclass(frozen=True)
class FolderParts:
    """A user's folder decoded: each part's ``uint8 [classes, examples, S, S]`` (grey) or
    ``[classes, examples, 3, S, S]`` (RGB) tensor, its class names, and how the parts were made."""

    root: Path
    digest: str
    images: dict[str, Tensor]
    classes: dict[str, tuple[str, ...]]
    #: images each class of a part had before the part was cut to its smallest class
    counts: dict[str, dict[str, int]]
    rule: str

    def record(self) -> dict[str, Any]:
        """What a result stores about the dataset: whose it is, where, its digest and its class split."""
        return {
            "owner": "user",
            "path": str(self.root),
            "content_sha256": self.digest,
            "split_rule": self.rule,
            "parts": {
                part: {
                    "classes": list(self.classes[part]),
                    "examples_per_class": int(self.images[part].shape[1]),
                    "images_found": sum(self.counts[part].values()),
                }
                for part in self.images
            },
        }


_MEMO: dict[tuple[str, int, str], FolderParts] = {}


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not any(p.startswith(".") for p in path.parts)


def scan(root: Path) -> tuple[list[Path], bool]:
    """Every image under ``root`` (relative paths, sorted) and whether it has part subfolders.

    Errors name the folder: missing, empty, or images outside any class subfolder.
    """
    if not root.is_dir():
        raise DataError(f"--images {root}: no such folder", "give a folder with one subfolder of images per class")
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file() and _is_image(p.relative_to(root)))
    if not files:
        raise DataError(
            f"--images {root}: no images found ({', '.join(sorted(IMAGE_SUFFIXES))})",
            "put each class's images in a subfolder named after the class: FOLDER/CLASS/IMAGE.png",
        )
    tops = {f.parts[0] for f in files if len(f.parts) > 1}
    by_part = bool(tops) and tops <= set(PART_FOLDERS) and {"train", "test"} <= {PART_FOLDERS[t] for t in tops}
    depth = 3 if by_part else 2
    loose = [f for f in files if len(f.parts) < depth]
    if loose:
        where = "FOLDER/PART/CLASS/IMAGE" if by_part else "FOLDER/CLASS/IMAGE"
        raise DataError(
            f"--images {root}: {loose[0]} is not inside a class subfolder ({len(loose)} such images)",
            f"lay the images out as {where}",
        )
    return files, by_part


def content_digest(root: Path, files: list[Path]) -> str:
    """sha256 over every image's relative path and bytes, length-prefixed, in sorted order."""
    h = hashlib.sha256()
    for name in files:
        for field in (name.as_posix().encode("utf-8"), (root / name).read_bytes()):
            h.update(struct.pack(">Q", len(field)) + field)
    return h.hexdigest()


def _decode_batch(batch: dict[str, list[Any]], size: int, mode: str) -> dict[str, list[Any]]:
    """``Dataset.map`` worker: each image's pixels at ``size`` in ``mode``, or why it cannot be read."""
    import io

    from PIL import Image

    pixels: list[bytes] = []
    errors: list[str] = []
    paths: list[str] = []
    for image in batch["image"]:
        path = image.get("path") or ""
        paths.append(path)
        try:
            source = Image.open(io.BytesIO(image["bytes"]) if image.get("bytes") else path)
            picture = source.convert(mode).resize((size, size), Image.Resampling.LANCZOS)
            pixels.append(picture.tobytes())
            errors.append("")
        except Exception as error:  # any decoder failure is the image's own, reported by its name
            pixels.append(b"")
            errors.append(f"{type(error).__name__}: {error}")
    return {"pixels": pixels, "error": errors, "file": paths}


def _num_proc(images: int, num_proc: int | None) -> int | None:
    """Worker processes for decoding: as asked, else one per 2000 images up to the CPU count (``None``:
    in this process, which is faster for a small folder than starting workers)."""
    if num_proc is not None:
        return num_proc if num_proc > 1 else None
    workers = min(os.cpu_count() or 1, images // 2000)
    return workers if workers > 1 else None


def decode(table: Any, size: int, mode: str, num_proc: int | None = None) -> Any:
    """A ``datasets.Dataset`` with an ``image`` column (paths or ``datasets.Image``) decoded: columns
    ``pixels`` (``size x size`` in ``mode``, row-major bytes), ``error`` (why an image could not be read,
    else empty) and ``file``; other columns are kept. Images are decoded in ``num_proc`` worker
    processes (default: by the count, see :func:`_num_proc`)."""
    import datasets

    table = table.cast_column("image", datasets.Image(decode=False))
    return table.map(
        _decode_batch,
        batched=True,
        batch_size=64,
        num_proc=_num_proc(len(table), num_proc),
        fn_kwargs={"size": size, "mode": mode},
        remove_columns=["image"],
        desc=f"decoding images at {size}x{size} {mode}",
    )


def _build(root: Path, size: int, mode: str, num_proc: int | None, target: Path) -> None:
    """Decode the folder through the image-folder builder and save the pixels as Arrow at ``target``."""
    import datasets

    from metabench.paths import cache_dir

    hf_cache = cache_dir() / "huggingface" / "datasets"
    bars_were_on = not datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        loaded = datasets.load_dataset("imagefolder", data_dir=str(root), cache_dir=str(hf_cache))
        pieces = []
        for split_name, part in loaded.items():
            names = part.features["label"].names
            part = part.map(
                lambda batch, names=names, split_name=split_name: {
                    "class": [names[i] for i in batch["label"]],
                    "split": [split_name] * len(batch["label"]),
                },
                batched=True,
            )
            pieces.append(part)
        table = datasets.concatenate_datasets(pieces)
        decoded = decode(table.remove_columns(["label"]), size, mode, num_proc)
        partial = target.with_name(target.name + ".part")
        decoded.save_to_disk(str(partial))
        if target.exists():  # another process finished first: its copy is the same
            return
        partial.rename(target)
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()


def _split_classes(names: list[str]) -> dict[str, list[str]]:
    """The seeded rule (:data:`SPLIT_RULE`) over sorted class names."""
    ordered = sorted(names)
    order = torch.randperm(len(ordered), generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
    shuffled = [ordered[i] for i in order]
    n_train = round(SPLIT_FRACTIONS[0] * len(shuffled))
    n_val = round(SPLIT_FRACTIONS[1] * len(shuffled))
    return {
        "train": sorted(shuffled[:n_train]),
        "val": sorted(shuffled[n_train : n_train + n_val]),
        "test": sorted(shuffled[n_train + n_val :]),
    }


def load(root: Path, image_size: int, mode: str = "L", *, num_proc: int | None = None) -> FolderParts:
    """The folder's parts at ``image_size`` in colour ``mode`` (``L`` or ``RGB``), from the Arrow cache or
    decoded once."""
    import datasets
    import numpy as np

    from metabench.paths import cache_dir

    if mode not in DATASET_OF_MODE:
        raise DataError(f"colour mode {mode!r} is not offered", "L (grey) or RGB")
    root = Path(root).expanduser().resolve()
    files, by_part = scan(root)
    digest = content_digest(root, files)
    key = (digest, image_size, mode)
    if key in _MEMO and _MEMO[key].root == root:
        return _MEMO[key]
    target = cache_dir() / "imagefolder" / f"{digest[:16]}-{image_size}px-{mode}-lanczos"
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        _build(root, image_size, mode, num_proc, target)
    table = datasets.load_from_disk(str(target))
    errors = [(f, e) for f, e in zip(table["file"], table["error"], strict=True) if e]
    if errors:
        file, error = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise DataError(f"--images {root}: cannot read image {file}: {error}{more}", "replace or remove the file")
    channels = 3 if mode == "RGB" else 1
    by_class: dict[tuple[str, str], list[tuple[str, bytes]]] = {}
    for file, name, split, pixels in zip(table["file"], table["class"], table["split"], table["pixels"], strict=True):
        part = PART_FOLDERS.get(split, split) if by_part else "all"
        by_class.setdefault((part, name), []).append((file, pixels))
    if by_part:
        assignment: dict[str, list[str]] = {}
        for part, name in sorted(by_class):
            assignment.setdefault(part, []).append(name)
        rule = "the folder's train/, val/ and test/ subfolders"
    else:
        assignment = _split_classes([name for _, name in by_class])
        by_class = {(part, name): by_class[("all", name)] for part, names in assignment.items() for name in names}
        rule = SPLIT_RULE
    images: dict[str, Tensor] = {}
    classes: dict[str, tuple[str, ...]] = {}
    counts: dict[str, dict[str, int]] = {}
    for part, names in assignment.items():
        if not names:
            continue
        lists = [sorted(by_class[(part, name)]) for name in names]
        keep = min(len(found) for found in lists)
        shape = (len(names), keep, *((channels,) if channels > 1 else ()), image_size, image_size)
        stacked = np.stack(
            [np.frombuffer(pixels, dtype=np.uint8) for found in lists for _, pixels in found[:keep]]
        ).reshape(len(names), keep, image_size, image_size, channels)
        tensor = torch.from_numpy(stacked.copy())
        tensor = tensor.permute(0, 1, 4, 2, 3).contiguous() if channels > 1 else tensor.squeeze(-1).contiguous()
        images[part] = tensor.view(shape)
        classes[part] = tuple(names)
        counts[part] = {name: len(found) for name, found in zip(names, lists, strict=True)}
    folder = FolderParts(root, digest, images, classes, counts, rule)
    _MEMO[key] = folder
    return folder


def mode_for(bench: Benchmark) -> str:
    """The colour mode a benchmark's method expects, or an error for a benchmark that is not on images."""
    if bench.dataset in DATASET_OF_MODE.values():
        return next(m for m, d in DATASET_OF_MODE.items() if d == bench.dataset)
    if bench.dataset not in IMAGE_DATASETS:
        raise DataError(
            f"--images runs image-classification benchmarks; {bench.id} is on {bench.dataset}",
            "pick a benchmark on omniglot or miniimagenet (see `metabench list`)",
        )
    return IMAGE_DATASETS[bench.dataset]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "images"


def user_benchmark(bench: Benchmark, root: Path) -> Benchmark:
    """``bench``'s protocol and profiles on the user's folder: no reported number, claim or floors (the
    paper's numbers are not about these images), named apart from the paper's benchmarks."""
    mode = mode_for(bench)
    resolved = Path(root).expanduser().resolve()
    files, _ = scan(resolved)
    digest = content_digest(resolved, files)
    profiles = {name: replace(p, floor=None, floor_note="") for name, p in bench.profiles.items()}
    setting = f"{bench.ways}w{bench.shots}s"
    return replace(
        bench,
        id=f"{_safe(resolved.name)}-{digest[:8]}-{setting}",
        dataset=DATASET_OF_MODE[mode],
        split=str(resolved),
        test_part="test",
        reported=None,
        claim=None,
        components=tuple(replace(c, reported=None) for c in bench.components),
        profiles=profiles,
        default=False,
        notes=f"{bench.id}'s protocol on the user's images in {resolved}",
    )


def check_fits(folder: FolderParts, bench: Benchmark, profile: Profile) -> None:
    """Each part the run samples from has enough classes for its ways and images for shots + queries."""
    needs = {
        profile.train_part: (profile.train_ways, profile.train_shots + profile.train_queries, "training"),
        bench.test_part: (bench.ways, bench.shots + bench.queries, "test"),
    }
    if profile.val_part:
        needs.setdefault(profile.val_part, (bench.ways, bench.shots + bench.queries, "validation"))
    for part, (ways, per_class, use) in needs.items():
        if part not in folder.images:
            raise DataError(
                f"--images {folder.root}: no {part!r} part for {use} episodes (parts: {', '.join(folder.images)}; "
                f"split by {folder.rule})",
                "add classes (the seeded split needs at least 5 to fill train, val and test) "
                "or make train/, val/ and test/ subfolders",
            )
        found = folder.classes[part]
        if len(found) < ways:
            raise DataError(
                f"--images {folder.root}: the {part} part has {len(found)} classes, fewer than the {ways} ways of "
                f"{use} episodes (split by {folder.rule})",
                "add classes, or pick a benchmark with fewer ways (--ways)",
            )
        short = {name: n for name, n in folder.counts[part].items() if n < per_class}
        if short:
            name, n = min(short.items(), key=lambda item: item[1])
            raise DataError(
                f"--images {folder.root}: class {name!r} ({part} part) has {n} images, fewer than the {per_class} "
                f"(shots + queries) of {use} episodes"
                + (f"; {len(short) - 1} more classes too" if len(short) > 1 else ""),
                "add images to it, remove the class, or pick a benchmark with fewer shots (--shots)",
            )


def load_parts(split: str, image_size: int, mode: str) -> Mapping[str, Any]:
    """The registry's loader: ``split`` is the folder's path (see :func:`user_benchmark`)."""
    from metabench.episodes import ClassBank

    folder = load(Path(split), image_size, mode)
    return {part: ClassBank(tensor, part) for part, tensor in folder.images.items()}
