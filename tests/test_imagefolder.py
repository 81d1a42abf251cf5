"""`run PAPER --images FOLDER`: the user's images through `datasets`' image-folder builder, on small
folders of generated PNGs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from metabench.cli import app
from metabench.data import imagefolder
from metabench.errors import DataError
from metabench.registry_loader import get_spec

runner = CliRunner()


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache per test, and no decoded folder remembered from another test."""
    monkeypatch.setenv("METABENCH_CACHE", str(tmp_path / "cache"))
    imagefolder._MEMO.clear()


def _png(path: Path, cls: int, example: int, size: tuple[int, int] = (14, 12)) -> None:
    """A class's colour (its own hue) with a little per-example noise, so classes can be told apart."""
    generator = torch.Generator().manual_seed(1000 * cls + example)
    colour = torch.tensor([(37 * cls) % 256, (91 * cls + 40) % 256, (53 * cls + 90) % 256], dtype=torch.float32)
    pixels = (colour + 20 * torch.randn(size[1], size[0], 3, generator=generator)).clamp(0, 255).to(torch.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.numpy()).save(path)


def make_folder(root: Path, classes: int, per_class: int, parts: dict[str, range] | None = None) -> Path:
    """``root/CLASS/IMAGE.png``, or ``root/PART/CLASS/IMAGE.png`` when ``parts`` maps part to class indices."""
    layout = parts or {"": range(classes)}
    for part, indices in layout.items():
        for cls in indices:
            for example in range(per_class):
                _png(root / part / f"class{cls:02d}" / f"{example:03d}.png", cls, example)
    return root


def test_flat_folder_is_split_by_the_seeded_rule_and_recorded(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "mine", classes=10, per_class=4)
    loaded = imagefolder.load(folder, 8, "L")
    assert {p: len(c) for p, c in loaded.classes.items()} == {"train": 6, "val": 2, "test": 2}
    assert sorted(c for cs in loaded.classes.values() for c in cs) == [f"class{i:02d}" for i in range(10)]
    assert loaded.images["train"].shape == (6, 4, 8, 8) and loaded.images["train"].dtype == torch.uint8
    record = loaded.record()
    assert record["owner"] == "user" and record["split_rule"] == imagefolder.SPLIT_RULE
    assert record["parts"]["test"]["classes"] == list(loaded.classes["test"])
    imagefolder._MEMO.clear()
    again = imagefolder.load(folder, 8, "L")  # from the Arrow cache, the same split and pixels
    assert again.classes == loaded.classes and torch.equal(again.images["val"], loaded.images["val"])


def test_rgb_for_colour_methods_and_pixels_match_pil(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "mine", classes=5, per_class=3)
    loaded = imagefolder.load(folder, 6, "RGB")
    assert loaded.images["train"].shape == (3, 3, 3, 6, 6)
    name = loaded.classes["train"][0]
    expected = Image.open(folder / name / "000.png").convert("RGB").resize((6, 6), Image.Resampling.LANCZOS)
    assert torch.equal(
        loaded.images["train"][0, 0].permute(1, 2, 0),
        torch.from_numpy(np.asarray(expected).copy()),
    )


def test_part_subfolders_are_used_and_validation_is_val(tmp_path: Path) -> None:
    folder = make_folder(
        tmp_path / "mine",
        classes=0,
        per_class=3,
        parts={"train": range(3), "validation": range(3, 5), "test": range(5, 7)},
    )
    loaded = imagefolder.load(folder, 8, "L")
    assert loaded.classes == {
        "train": ("class00", "class01", "class02"),
        "val": ("class03", "class04"),
        "test": ("class05", "class06"),
    }
    assert "subfolders" in loaded.rule


def test_a_changed_image_rebuilds_the_cache(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "mine", classes=5, per_class=3)
    first = imagefolder.load(folder, 8, "L")
    Image.new("RGB", (14, 12), (255, 255, 255)).save(folder / first.classes["test"][0] / "000.png")
    imagefolder._MEMO.clear()
    second = imagefolder.load(folder, 8, "L")
    assert second.digest != first.digest
    assert torch.all(second.images["test"][0, 0] == 255) and not torch.all(first.images["test"][0, 0] == 255)
    assert len(list((tmp_path / "cache" / "imagefolder").iterdir())) == 2


def test_decoding_in_worker_processes_gives_the_same_pixels(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "mine", classes=5, per_class=3)
    one = imagefolder.load(folder, 8, "L", num_proc=1)
    import shutil

    shutil.rmtree(tmp_path / "cache" / "imagefolder")
    imagefolder._MEMO.clear()
    two = imagefolder.load(folder, 8, "L", num_proc=2)
    assert all(torch.equal(one.images[p], two.images[p]) for p in one.images)


def test_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        imagefolder.load(tmp_path / "empty", 8)
    with pytest.raises(DataError, match="no such folder"):
        imagefolder.load(tmp_path / "absent", 8)
    loose = make_folder(tmp_path / "loose", classes=2, per_class=2)
    _png(loose / "stray.png", 0, 9)
    with pytest.raises(DataError, match=r"stray\.png is not inside a class subfolder"):
        imagefolder.load(loose, 8)
    broken = make_folder(tmp_path / "broken", classes=5, per_class=3)
    (broken / "class03" / "001.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"cannot read image .*class03/001\.png"):
        imagefolder.load(broken, 8)


def test_fit_errors_name_the_part_the_class_and_the_count(tmp_path: Path) -> None:
    bench = get_spec("protonet").benchmark("omniglot-5w1s")
    few_classes = make_folder(tmp_path / "few", classes=10, per_class=20)
    user = imagefolder.user_benchmark(bench, few_classes)
    with pytest.raises(DataError, match=r"test part has 2 classes, fewer than the 5 ways"):
        imagefolder.check_fits(imagefolder.load(few_classes, 28), user, user.profile("smoke"))
    parts = {"train": range(5), "val": range(5, 10), "test": range(10, 15)}
    few_images = make_folder(tmp_path / "short", classes=0, per_class=12, parts=parts)
    user = imagefolder.user_benchmark(bench, few_images)
    with pytest.raises(DataError, match=r"has 12 images, fewer than the 16 \(shots \+ queries\)"):
        imagefolder.check_fits(imagefolder.load(few_images, 28), user, user.profile("smoke"))


def test_only_image_benchmarks_run_on_images(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "mine", classes=5, per_class=3)
    with pytest.raises(DataError, match="image-classification benchmarks"):
        imagefolder.user_benchmark(get_spec("maml").benchmark("sinusoid-5shot"), folder)


def test_run_on_your_images_end_to_end(tmp_path: Path) -> None:
    parts = {"train": range(6), "val": range(6, 11), "test": range(11, 16)}
    folder = make_folder(tmp_path / "mine", classes=0, per_class=16, parts=parts)
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["run", "protonet", "--shots", "1", "--profile", "smoke", "--images", str(folder), "--output", str(out)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    written = sorted(out.glob("protonet/*.json"))
    assert len(written) == 1
    data = json.loads(written[0].read_text(encoding="utf-8"))
    assert data["reported"] is None and data["verdict"]["verdict"] == "no target"
    assert data["protocol"]["dataset"] == "imagefolder" and data["targets"]["floor"] is None
    assert data["user_images"]["owner"] == "user" and data["user_images"]["parts"]["test"]["classes"][0] == "class11"
    assert len(data["test_episodes"]["digest"]) == 64
    assert data["benchmark"].startswith("mine-") and data["benchmark"].endswith("-5w1s")
    assert "your images in" in result.output and "no verdict" in result.output
    shown = runner.invoke(app, ["compare", str(out), "--format", "json"], catch_exceptions=False)
    assert json.loads(shown.stdout)[0]["verdict"] == "no target"
    from metabench import report

    page = report.render([out])
    assert "the user&#x27;s images in" in page and "test classes" in page
