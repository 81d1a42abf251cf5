"""miniImageNet from a user-supplied folder (Ravi layout), on the synthetic ``mini_root`` folders.

Tests that break a folder or must not reuse a cached build point ``METABENCH_CACHE`` at their own
``tmp_path``: the cache is keyed by the csv files' bytes, so a copy with the same csv files would
otherwise load the intact build.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image

import metabench
from metabench.data import DATASETS, channels, load_parts, miniimagenet, split_names
from metabench.episodes import ClassBank, EpisodeBatch, EpisodeSampler, EpisodeShape, freeze, sample_index
from metabench.errors import DataError, MetabenchError, UnknownNameError
from metabench.evaluate import evaluate
from metabench.reproduction import Reproduction, TaskInfo
from tests.conftest import MINI_EXAMPLES, MINI_HEIGHT, MINI_SPLITS, MINI_WIDTH, mini_label


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("METABENCH_CACHE", str(cache))
    return cache


def copy_of(mini_root: Path, tmp_path: Path, dirname: str = "miniimagenet") -> Path:
    """A private data folder holding a copy of one synthetic split folder, safe to break."""
    shutil.copytree(mini_root / dirname, tmp_path / "data" / dirname)
    return tmp_path / "data"


def test_names_and_channels() -> None:
    assert "miniimagenet" in DATASETS
    assert split_names("miniimagenet") == ["ravi", "vinyals"]
    assert channels("miniimagenet") == 3 and channels("omniglot") == 1
    with pytest.raises(UnknownNameError, match="did you mean 'miniimagenet'"):
        channels("mini-imagenet")
    with pytest.raises(UnknownNameError, match="did you mean 'ravi'"):
        load_parts("miniimagenet", "ravy", 84)


def test_ravi_parts_are_rgb_84px_banks_sorted_by_class_in_csv_order(mini_root: Path, fresh_cache: Path) -> None:
    banks = load_parts("miniimagenet", "ravi", 84, mini_root, progress=False)
    assert list(banks) == ["train", "val", "test"]
    for part, count in MINI_SPLITS["miniimagenet"].items():
        bank = banks[part]
        assert bank.name == part and bank.channels == 3
        assert bank.images.dtype == torch.uint8
        assert tuple(bank.images.shape) == (count, MINI_EXAMPLES, 3, 84, 84)

    parts = miniimagenet.load_images("ravi", 84, mini_root)
    assert parts["train"].classes == tuple(sorted(parts["train"].classes)) == tuple(mini_label(k) for k in range(8))
    assert parts["val"].classes[0] == mini_label(8) and parts["test"].classes[-1] == mini_label(17)
    assert torch.equal(parts["test"].images, banks["test"].images)

    # Row 0 is the smallest class id; example j is the j-th line of that class in test.csv.
    lines = (mini_root / "miniimagenet" / "test.csv").read_text().splitlines()[1:]
    first_class = [name for name, label in (line.split(",") for line in lines) if label == mini_label(13)]
    for example in (0, 5, MINI_EXAMPLES - 1):
        with Image.open(mini_root / "miniimagenet" / "images" / first_class[example]) as picture:
            assert picture.size == (MINI_WIDTH, MINI_HEIGHT)
            expected = picture.convert("RGB").resize((84, 84), Image.Resampling.LANCZOS)
        pixels = torch.frombuffer(bytearray(expected.tobytes()), dtype=torch.uint8).view(84, 84, 3).permute(2, 0, 1)
        assert torch.equal(banks["test"].images[0, example], pixels)


def test_second_load_comes_from_the_cache(mini_root: Path, fresh_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built = load_parts("miniimagenet", "ravi", 84, mini_root, progress=False)
    processed = list((fresh_cache / "miniimagenet" / "processed").glob("miniimagenet-84px-lanczos-*.pt"))
    assert len(processed) == 1
    assert (fresh_cache / "huggingface" / "datasets").is_dir(), "the datasets cache lives in the metabench cache"

    def no_rebuild(*args: object) -> dict[str, object]:
        raise AssertionError("the cached build was decoded again")

    monkeypatch.setattr(miniimagenet, "_decode", no_rebuild)
    again = load_parts("miniimagenet", "ravi", 84, mini_root, progress=False)
    assert all(torch.equal(again[part].images, built[part].images) for part in built)

    with pytest.raises(AssertionError, match="decoded again"):  # another size is another cache entry
        load_parts("miniimagenet", "ravi", 32, mini_root, progress=False)


def test_other_image_sizes_are_resize_targets(mini_root: Path, fresh_cache: Path) -> None:
    banks = load_parts("miniimagenet", "ravi", 32, mini_root, progress=False)
    assert tuple(banks["val"].images.shape) == (5, MINI_EXAMPLES, 3, 32, 32)


def test_changed_csv_rebuilds(mini_root: Path, tmp_path: Path, fresh_cache: Path) -> None:
    data = copy_of(mini_root, tmp_path)
    before = load_parts("miniimagenet", "ravi", 84, data, progress=False)
    csv = data / "miniimagenet" / "test.csv"
    header, *rows = csv.read_text().splitlines()
    csv.write_text("\n".join([header, *reversed(rows)]) + "\n")  # same images, reversed example order
    after = load_parts("miniimagenet", "ravi", 84, data, progress=False)
    assert len(list((fresh_cache / "miniimagenet" / "processed").glob("*.pt"))) == 2
    assert torch.equal(after["test"].images, before["test"].images.flip(1))


def test_vinyals_split_needs_no_val_csv(mini_root: Path, tmp_path: Path, fresh_cache: Path) -> None:
    assert not (mini_root / "miniimagenet-vinyals" / "val.csv").exists()
    banks = load_parts("miniimagenet", "vinyals", 84, mini_root, progress=False)
    assert list(banks) == ["train", "test"]
    assert tuple(banks["train"].images.shape) == (6, MINI_EXAMPLES, 3, 84, 84)
    assert tuple(banks["test"].images.shape) == (5, MINI_EXAMPLES, 3, 84, 84)

    data = copy_of(mini_root, tmp_path, "miniimagenet-vinyals")
    folder = data / "miniimagenet-vinyals"
    header, *rows = (folder / "test.csv").read_text().splitlines()
    (folder / "val.csv").write_text("\n".join([header, *rows]) + "\n")
    with_val = load_parts("miniimagenet", "vinyals", 84, data, progress=False)
    assert list(with_val) == ["train", "test", "val"]
    assert torch.equal(with_val["val"].images, with_val["test"].images)


def test_missing_folder_names_every_place_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    given, env, cache = tmp_path / "given", tmp_path / "env", tmp_path / "cache"
    monkeypatch.setenv("METABENCH_DATA", str(env))
    monkeypatch.setenv("METABENCH_CACHE", str(cache))
    with pytest.raises(DataError) as caught:
        load_parts("miniimagenet", "ravi", 84, given)
    text = str(caught.value)
    assert "\n" not in text
    for place in (given, env, cache):
        assert str(place / "miniimagenet") in caught.value.message
    assert "images/ plus train.csv, val.csv, test.csv with the header filename,label" in caught.value.hint
    assert "not downloaded automatically: its licence forbids redistribution" in caught.value.hint

    with pytest.raises(DataError, match=r"miniimagenet-vinyals.*train.csv, test.csv \(val.csv optional\)"):
        load_parts("miniimagenet", "vinyals", 84, given)


def test_incomplete_folder_says_what_it_lacks(mini_root: Path, tmp_path: Path, fresh_cache: Path) -> None:
    data = copy_of(mini_root, tmp_path)
    (data / "miniimagenet" / "val.csv").unlink()
    with pytest.raises(DataError, match=r"miniimagenet lacks val.csv"):
        load_parts("miniimagenet", "ravi", 84, data)


def test_csv_naming_a_missing_image_names_the_file(mini_root: Path, tmp_path: Path, fresh_cache: Path) -> None:
    data = copy_of(mini_root, tmp_path)
    gone = data / "miniimagenet" / "images" / f"{mini_label(9)}{3:08d}.png"
    gone.unlink()
    with pytest.raises(DataError, match="does not exist") as caught:
        load_parts("miniimagenet", "ravi", 84, data)
    assert str(gone) in caught.value.message and "val.csv" in caught.value.message


def test_unreadable_image_names_the_file(mini_root: Path, tmp_path: Path, fresh_cache: Path) -> None:
    data = copy_of(mini_root, tmp_path)
    broken = data / "miniimagenet" / "images" / f"{mini_label(2)}{7:08d}.png"
    broken.write_bytes(b"<html>not an image</html>")
    with pytest.raises(DataError, match="cannot read image") as caught:
        load_parts("miniimagenet", "ravi", 84, data)
    assert str(broken) in caught.value.message and "train.csv" in caught.value.message
    assert not list(fresh_cache.glob("miniimagenet/processed/*.pt")), "a failed build caches nothing"


def test_unequal_examples_per_class_are_refused(mini_root: Path, tmp_path: Path, fresh_cache: Path) -> None:
    data = copy_of(mini_root, tmp_path)
    csv = data / "miniimagenet" / "train.csv"
    header, *rows = csv.read_text().splitlines()
    short = [row for row in rows if not row.endswith(mini_label(4))] + [
        row for row in rows if row.endswith(mini_label(4))
    ][:-1]
    csv.write_text("\n".join([header, *short]) + "\n")
    with pytest.raises(MetabenchError, match=rf"class {mini_label(4)} has {MINI_EXAMPLES - 1} images but .* has 24"):
        load_parts("miniimagenet", "ravi", 84, data)


def test_wrong_header_is_refused(mini_root: Path, tmp_path: Path, fresh_cache: Path) -> None:
    data = copy_of(mini_root, tmp_path)
    csv = data / "miniimagenet" / "test.csv"
    csv.write_text(csv.read_text().replace("filename,label", "file,class", 1))
    with pytest.raises(DataError, match=r"test\.csv: the header is 'file,class', not 'filename,label'"):
        load_parts("miniimagenet", "ravi", 84, data)


# --------------------------------------------------------------------------- class banks with channels


def test_rgb_bank_gathers_five_dimensional_float_images(mini_root: Path) -> None:
    bank = load_parts("miniimagenet", "ravi", 84, mini_root, progress=False)["train"]
    shape = EpisodeShape(ways=5, shots=2, queries=3)
    index = sample_index(bank.num_classes, bank.examples_per_class, shape, 4, torch.Generator().manual_seed(0))
    batch = bank.gather(index, shape)
    assert batch.support_x.shape == (4, 10, 3, 84, 84) and batch.query_x.shape == (4, 15, 3, 84, 84)
    assert batch.support_x.dtype == torch.float32
    assert float(batch.support_x.min()) >= 0.0 and float(batch.support_x.max()) <= 1.0
    first = bank.images[index.classes[0, 0], index.examples[0, 0, 0]].float() / 255
    assert torch.equal(batch.support_x[0, 0], first)


def test_grayscale_bank_still_gets_a_channel_axis_of_one() -> None:
    images = torch.randint(0, 256, (6, 4, 9, 9), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    bank = ClassBank(images, "gray")
    assert bank.channels == 1
    batch = EpisodeSampler(bank, EpisodeShape(3, 1, 2), seed=0).sample(5)
    assert batch.support_x.shape == (5, 3, 1, 9, 9) and batch.query_x.shape == (5, 6, 1, 9, 9)
    assert float(batch.query_x.min()) >= 0.0 and float(batch.query_x.max()) <= 1.0
    with pytest.raises(ValueError, match=r"\[classes, examples, C, H, W\]"):
        ClassBank(images[0])


@dataclass(frozen=True)
class NoSettings:
    pass


def mean_colour(images: torch.Tensor) -> torch.Tensor:
    """``[..., 3, H, W]`` images to their mean colour ``[..., 3]``."""
    assert images.shape[-3] == 3, "images reach the model with their RGB channel axis"
    return images.mean((-2, -1))


def nearest_mean(support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor, ways: int) -> torch.Tensor:
    onehot = torch.nn.functional.one_hot(support_y, ways).float()  # [B, n, ways]
    means = onehot.transpose(1, 2) @ support / onehot.sum(1).unsqueeze(-1)
    return -torch.cdist(query, means)


class EpisodicMeanColour(Reproduction):
    """Nearest class mean of each image's mean colour, computed per episode: no training needed."""

    Hyperparameters = NoSettings

    def __init__(self) -> None:
        super().__init__(NoSettings(), TaskInfo(3, 84, 5, 1))
        self.unused = torch.nn.Parameter(torch.zeros(()))  # says which device the model is on

    def predict(self, batch: EpisodeBatch) -> torch.Tensor:
        return nearest_mean(mean_colour(batch.support_x), batch.support_y, mean_colour(batch.query_x), batch.ways)


class EmbeddedMeanColour(EpisodicMeanColour):
    """The same, through the evaluator's embed-every-image-once path."""

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        assert images.dim() == 4, "the evaluator embeds [n, 3, H, W]"
        return mean_colour(images)

    def predict_embedded(self, batch: EpisodeBatch) -> torch.Tensor:
        return nearest_mean(batch.support_x, batch.support_y, batch.query_x, batch.ways)


def test_synthetic_classes_are_learnable_and_evaluate_handles_rgb(mini_root: Path) -> None:
    """The fixture's classes are told apart by colour, so a few-shot model can beat chance, and both of
    the evaluator's paths (per episode, embed once) hand models ``[..., 3, H, W]`` images."""
    bank = load_parts("miniimagenet", "ravi", 84, mini_root, progress=False)["test"]
    frozen = freeze(bank, EpisodeShape(5, 1, 15), 40, 0, {"dataset": "miniimagenet"})
    per_episode = evaluate(EpisodicMeanColour(), frozen, bank, 20)
    embedded = evaluate(EmbeddedMeanColour(), frozen, bank, 20)
    assert EmbeddedMeanColour().embeds_independently and not EpisodicMeanColour().embeds_independently
    assert torch.allclose(per_episode, embedded)
    assert float(embedded.mean()) > 20.0 + 40.0, "5-way 1-shot far above chance on colour alone"


def test_evaluate_on_images_takes_rgb_for_a_three_channel_model(mini_root: Path) -> None:
    images = load_parts("miniimagenet", "ravi", 84, mini_root, progress=False)["test"].images
    scored = metabench.evaluate_on_images(EmbeddedMeanColour(), images, ways=5, shots=1, queries=5, episodes=20)
    assert scored.scores.shape == (20,) and scored.summary.mean > 60.0
    with pytest.raises(MetabenchError, match=r"images must be \[classes, examples, 3, H, W\]"):
        metabench.evaluate_on_images(EmbeddedMeanColour(), images[:, :, 0], ways=5, shots=1, queries=5)
