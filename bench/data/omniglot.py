"""Omniglot (Lake et al. 2015): 1623 characters of 50 alphabets, 20 drawings each.

The two archives are decoded once into ``uint8 [1623, 20, S, S]`` (ink high, background 0; resized
from 105x105 with a Lanczos filter, as MAML pre-resized them) and cached keyed by the archives'
digests, so later runs load in milliseconds.

Papers used different splits of the same characters, and their numbers are not interchangeable; the
spec names the split. Every split is a list of (character, rotation) classes per part:

``protonet``  Snell et al.'s "vinyals" split files: characters 1..1200 by global id (30 background
              alphabets and 8 evaluation alphabets, Gurmukhi cut at character 42) are ``trainval``,
              1201..1623 are ``test``; ``val`` is their five validation alphabets; rotations by 0, 90,
              180, 270 degrees are distinct classes in every part (4800 trainval, 1692 test classes).
``maml``      Finn et al.'s code: all characters shuffled with Python's ``random.seed(1)``, 1100
              ``train``, 100 ``val``, 423 ``test``; rotations are classes in every part. (The code
              shuffled ``os.listdir`` order, which no one can recover; this shuffles global-id order.)
``reptile``   Nichol et al.'s code: shuffled with ``random.seed(0)``, 1200 ``train`` with rotations,
              423 ``test`` unrotated.
``lake``      The background / evaluation alphabets (964 / 659 characters), unrotated.
``santoro``   Santoro et al.'s MANN protocol: characters 1..1200 by global id ``train``, with rotations
              by 90, 180, 270 degrees as new classes (4800); the remaining 423 (1201..1623) ``test``,
              unrotated, as the paper describes rotations as training augmentation.
``flennerhag`` Flennerhag et al.'s (Leap, WarpGrad) "augmented Omniglot": every task is one alphabet.
              Their code keeps the alphabets with at least 20 characters, shuffles them with Python's
              ``random.seed(8879)`` (its default seed; it shuffled ``os.listdir`` order, which no one
              can recover, so this shuffles the alphabets sorted by name) and takes the first 30 as
              ``train``, the next 10 as ``test`` and the rest as ``val``; characters are unrotated
              (the protocol's random affine augmentation is the learner's, see the shrinkage
              reproduction). The parts are grouped banks: an episode's classes all come from one
              alphabet. Assumed, not known: the shrinkage paper's own seed and alphabet order.
"""

from __future__ import annotations

import io
import random
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from metabench.data import archives
from metabench.data.cache import cached_tensors
from metabench.errors import DataError

NUM_CHARACTERS = 1623
DRAWINGS = 20
ROTATIONS = 4
_MEMBER = re.compile(r"^images_(?:background|evaluation)/([^/]+)/character(\d+)/(\d{4})_(\d{2})\.png$")
PROTONET_VAL_ALPHABETS = ("Armenian", "Bengali", "Early_Aramaic", "Hebrew", "Mkhedruli_(Georgian)")


@dataclass(frozen=True)
class OmniglotImages:
    """Every drawing, indexed by (global character id - 1, drawer - 1), and each character's alphabet."""

    images: Tensor
    alphabets: tuple[str, ...]
    background: Tensor

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]


def _decode(paths: list[Path], image_size: int) -> dict[str, object]:
    images = torch.zeros(NUM_CHARACTERS, DRAWINGS, image_size, image_size, dtype=torch.uint8)
    alphabets = [""] * NUM_CHARACTERS
    background = torch.zeros(NUM_CHARACTERS, dtype=torch.bool)
    seen = torch.zeros(NUM_CHARACTERS, DRAWINGS, dtype=torch.bool)
    for path in paths:
        try:
            _decode_archive(path, image_size, images, alphabets, background, seen)
        except archives.DECODE_ERRORS as error:
            raise archives.decode_error(path, error) from error
    if not bool(seen.all()):
        missing = int((~seen).sum())
        raise DataError(f"Omniglot archives lack {missing} of {seen.numel()} drawings", "run metabench data verify")
    return {"images": images, "alphabets": "\n".join(alphabets), "background": background}


def _decode_archive(
    path: Path, image_size: int, images: Tensor, alphabets: list[str], background: Tensor, seen: Tensor
) -> None:
    """Decode one archive's drawings into the arrays; a damaged archive raises its zip or zlib error."""
    from PIL import Image

    with zipfile.ZipFile(path) as archive:
        for member in archive.infolist():
            match = _MEMBER.match(member.filename)
            if not match:
                continue
            alphabet, _, char_id, drawer = match.groups()
            char, draw = int(char_id) - 1, int(drawer) - 1
            with Image.open(io.BytesIO(archive.read(member))) as picture:
                small = picture.convert("L").resize((image_size, image_size), Image.Resampling.LANCZOS)
            images[char, draw] = 255 - torch.frombuffer(bytearray(small.tobytes()), dtype=torch.uint8).view(
                image_size, image_size
            )
            alphabets[char] = alphabet
            background[char] = member.filename.startswith("images_background/")
            seen[char, draw] = True


def load_images(
    image_size: int = 28, data_dir: Path | None = None, *, download: bool = True, progress: bool = True
) -> OmniglotImages:
    """Every Omniglot drawing at ``image_size``, from the cache or decoded from the verified archives."""
    paths = [archives.fetch(a, data_dir, download=download, progress=progress) for a in archives.CATALOGUE["omniglot"]]
    digests = "-".join(a.content_sha256[:12] for a in archives.CATALOGUE["omniglot"])
    tensors = cached_tensors(
        f"omniglot/processed/omniglot-{image_size}px-lanczos-{digests}.pt",
        lambda: _decode(paths, image_size),
        description=f"Decoding Omniglot at {image_size}x{image_size} (once)",
    )
    return OmniglotImages(
        images=tensors["images"],
        alphabets=tuple(str(tensors["alphabets"]).split("\n")),
        background=tensors["background"],
    )


def _classes(characters: list[int], rotations: int) -> Tensor:
    """(character, rotation) pairs, rotations of one character adjacent."""
    return torch.tensor([(c, r) for c in characters for r in range(rotations)], dtype=torch.long).view(-1, 2)


def _protonet(data: OmniglotImages) -> dict[str, Tensor]:
    trainval = list(range(1200))
    val = [c for c in trainval if data.alphabets[c] in PROTONET_VAL_ALPHABETS]
    val_set = set(val)
    return {
        "trainval": _classes(trainval, ROTATIONS),
        "train": _classes([c for c in trainval if c not in val_set], ROTATIONS),
        "val": _classes(val, ROTATIONS),
        "test": _classes(list(range(1200, NUM_CHARACTERS)), ROTATIONS),
    }


def _shuffled(seed: int) -> list[int]:
    characters = list(range(NUM_CHARACTERS))
    random.Random(seed).shuffle(characters)
    return characters


def _maml(data: OmniglotImages) -> dict[str, Tensor]:
    order = _shuffled(1)
    return {
        "train": _classes(order[:1100], ROTATIONS),
        "val": _classes(order[1100:1200], ROTATIONS),
        "trainval": _classes(order[:1200], ROTATIONS),
        "test": _classes(order[1200:], ROTATIONS),
    }


def _reptile(data: OmniglotImages) -> dict[str, Tensor]:
    order = _shuffled(0)
    return {"train": _classes(order[:1200], ROTATIONS), "test": _classes(order[1200:], 1)}


def _lake(data: OmniglotImages) -> dict[str, Tensor]:
    background = data.background.nonzero().flatten().tolist()
    evaluation = (~data.background).nonzero().flatten().tolist()
    return {"train": _classes(background, 1), "test": _classes(evaluation, 1)}


def _santoro(data: OmniglotImages) -> dict[str, Tensor]:
    return {"train": _classes(list(range(1200)), ROTATIONS), "test": _classes(list(range(1200, NUM_CHARACTERS)), 1)}


#: Flennerhag et al.'s protocol: alphabets with at least this many characters, shuffled by this seed.
FLENNERHAG_MIN_CHARACTERS = 20
FLENNERHAG_SEED = 8879
FLENNERHAG_TRAIN, FLENNERHAG_TEST = 30, 10


def _flennerhag(data: OmniglotImages) -> dict[str, Tensor]:
    counts: dict[str, int] = {}
    for alphabet in data.alphabets:
        counts[alphabet] = counts.get(alphabet, 0) + 1
    alphabets = sorted(a for a, n in counts.items() if n >= FLENNERHAG_MIN_CHARACTERS)
    random.Random(FLENNERHAG_SEED).shuffle(alphabets)
    train = alphabets[:FLENNERHAG_TRAIN]
    test = alphabets[FLENNERHAG_TRAIN : FLENNERHAG_TRAIN + FLENNERHAG_TEST]
    val = alphabets[FLENNERHAG_TRAIN + FLENNERHAG_TEST :]

    def characters(chosen: list[str]) -> list[int]:
        wanted = set(chosen)
        return [c for c in range(NUM_CHARACTERS) if data.alphabets[c] in wanted]

    return {
        "train": _classes(characters(train), 1),
        "val": _classes(characters(val), 1),
        "test": _classes(characters(test), 1),
    }


#: Splits whose parts are grouped by alphabet (episodes draw all their classes from one alphabet).
GROUPED_SPLITS = frozenset({"flennerhag"})


def alphabet_groups(data: OmniglotImages, classes: Tensor) -> Tensor:
    """Each class's alphabet as a small integer (alphabets numbered in order of first appearance)."""
    numbers: dict[str, int] = {}
    return torch.tensor([numbers.setdefault(data.alphabets[int(c)], len(numbers)) for c in classes[:, 0]])


SPLITS: dict[str, Callable[[OmniglotImages], dict[str, Tensor]]] = {
    "protonet": _protonet,
    "maml": _maml,
    "reptile": _reptile,
    "lake": _lake,
    "santoro": _santoro,
    "flennerhag": _flennerhag,
}


def class_images(data: OmniglotImages, classes: Tensor) -> Tensor:
    """The drawings of each (character, rotation) class, ``uint8 [len(classes), 20, S, S]``."""
    out = data.images[classes[:, 0]].clone()
    for quarter in range(1, ROTATIONS):
        chosen = classes[:, 1] == quarter
        if bool(chosen.any()):
            out[chosen] = torch.rot90(out[chosen], quarter, dims=(-2, -1))
    return out
