"""Omniglot preprocessing and the papers' splits, on the real archives."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from metabench.data import archives, load_parts, omniglot
from metabench.data.cache import cached_tensors
from metabench.errors import UnknownNameError


@pytest.fixture(scope="module")
def images(data_dir: Path) -> omniglot.OmniglotImages:
    return omniglot.load_images(28, progress=False)


@pytest.mark.data
def test_decoded_images_are_complete_and_ink_high(images: omniglot.OmniglotImages) -> None:
    assert images.images.shape == (1623, 20, 28, 28) and images.images.dtype == torch.uint8
    assert len(set(images.alphabets)) == 50
    assert int(images.background.sum()) == 964
    mean = images.images.float().mean().item()
    assert 5 < mean < 60, "strokes are sparse and bright, the background dark"
    assert bool((images.images.flatten(1).amax(1) > 128).all()), "every drawing has ink"


@pytest.mark.data
@pytest.mark.parametrize(
    ("split", "sizes"),
    [
        ("protonet", {"trainval": 4800, "train": 4112, "val": 688, "test": 1692}),
        ("maml", {"train": 4400, "val": 400, "trainval": 4800, "test": 1692}),
        ("reptile", {"train": 4800, "test": 423}),
        ("lake", {"train": 964, "test": 659}),
    ],
)
def test_split_sizes_match_the_papers(images: omniglot.OmniglotImages, split: str, sizes: dict[str, int]) -> None:
    parts = omniglot.SPLITS[split](images)
    assert {name: len(classes) for name, classes in parts.items()} == sizes


@pytest.mark.data
@pytest.mark.parametrize("split", list(omniglot.SPLITS))
def test_train_and_test_characters_never_overlap(images: omniglot.OmniglotImages, split: str) -> None:
    parts = omniglot.SPLITS[split](images)
    test = set(parts["test"][:, 0].tolist())
    for name, classes in parts.items():
        if name != "test":
            assert not test & set(classes[:, 0].tolist()), f"{split}: {name} shares characters with test"


@pytest.mark.data
def test_protonet_split_is_the_alphabet_ordered_split_files(images: omniglot.OmniglotImages) -> None:
    parts = omniglot.SPLITS["protonet"](images)
    assert sorted(set(parts["test"][:, 0].tolist())) == list(range(1200, 1623))
    test_alphabets = {images.alphabets[c] for c in range(1200, 1623)}
    assert len(test_alphabets) == 13 and "Gurmukhi" in test_alphabets
    assert len({images.alphabets[c] for c in range(1200)}) == 38
    val_alphabets = {images.alphabets[c] for c in parts["val"][:, 0].tolist()}
    assert val_alphabets == set(omniglot.PROTONET_VAL_ALPHABETS)
    assert sorted(set(parts["test"][:, 1].tolist())) == [0, 1, 2, 3], "rotations are test classes too"


@pytest.mark.data
def test_reptile_tests_on_unrotated_characters(images: omniglot.OmniglotImages) -> None:
    parts = omniglot.SPLITS["reptile"](images)
    assert set(parts["test"][:, 1].tolist()) == {0}
    assert set(parts["train"][:, 1].tolist()) == {0, 1, 2, 3}


@pytest.mark.data
def test_class_banks_hold_rotated_drawings(images: omniglot.OmniglotImages) -> None:
    classes = torch.tensor([[5, 0], [5, 2], [7, 3]])
    bank = omniglot.class_images(images, classes)
    assert torch.equal(bank[0], images.images[5])
    assert torch.equal(bank[1], torch.rot90(images.images[5], 2, dims=(-2, -1)))
    assert torch.equal(bank[2], torch.rot90(images.images[7], 3, dims=(-2, -1)))


@pytest.mark.data
def test_preprocessed_arrays_are_cached_and_reloaded(images: omniglot.OmniglotImages) -> None:
    from metabench.paths import cache_dir

    # the real archives' file: the synthetic ones (tests/synthetic_data.py) cache beside it under their digests
    digests = "-".join(a.content_sha256[:12] for a in archives.CATALOGUE["omniglot"])
    assert (cache_dir() / "omniglot" / "processed" / f"omniglot-28px-lanczos-{digests}.pt").is_file()
    again = omniglot.load_images(28, progress=False)
    assert torch.equal(again.images, images.images)


@pytest.mark.data
def test_unknown_split_names_the_known_ones() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'protonet'"):
        load_parts("omniglot", "protonets", 28)


def test_unknown_dataset_is_refused() -> None:
    with pytest.raises(UnknownNameError, match="unknown dataset 'omniglott'"):
        load_parts("omniglott", "protonet", 28)


def test_a_corrupt_cache_file_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METABENCH_CACHE", str(tmp_path))
    builds = []

    def build() -> dict[str, torch.Tensor]:
        builds.append(1)
        return {"x": torch.arange(3)}

    assert torch.equal(cached_tensors("d/x.pt", build, "building")["x"], torch.arange(3))
    assert torch.equal(cached_tensors("d/x.pt", build, "building")["x"], torch.arange(3))
    assert len(builds) == 1
    (tmp_path / "d" / "x.pt").write_bytes(b"not a tensor file")
    assert torch.equal(cached_tensors("d/x.pt", build, "building")["x"], torch.arange(3))
    assert len(builds) == 2
    assert not list((tmp_path / "d").glob("*.part"))
