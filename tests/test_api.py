"""The Python API: run, load results, load a trained model and score it on the caller's own images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import metabench
from metabench.errors import MetabenchError


@pytest.mark.data
def test_trained_model_scores_the_callers_images(data_dir: Path, tmp_path: Path, protonet_parts) -> None:
    result, path = metabench.run_benchmark("protonet", benchmark="omniglot-5w1s", profile="smoke", output=tmp_path)
    frame = metabench.load_results(tmp_path)
    assert list(frame["benchmark"]) == ["omniglot-5w1s"] and frame["mean"][0] == pytest.approx(
        result["summary"]["mean"]
    )

    model = metabench.load_model(path)
    own_characters = protonet_parts["test"].images[:40]  # [40, 20, 28, 28] uint8, as a researcher might bring
    scored = metabench.evaluate_on_images(model, own_characters, ways=5, shots=1, queries=5, episodes=60)
    assert scored.scores.shape == (60,)
    assert scored.summary.mean > 20.0 + 15.0, "a trained model does far better than chance on real characters"
    as_float = metabench.evaluate_on_images(
        model, own_characters.float() / 255, ways=5, shots=1, queries=5, episodes=60
    )
    assert torch.equal(as_float.scores, scored.scores) and as_float.digest == scored.digest

    noise = torch.randint(0, 256, (40, 20, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    on_noise = metabench.evaluate_on_images(model, noise, ways=5, shots=1, queries=5, episodes=60)
    assert on_noise.summary.mean < scored.summary.mean - 15.0

    with pytest.raises(MetabenchError, match="expects 28x28"):
        metabench.evaluate_on_images(model, torch.zeros(10, 20, 32, 32), ways=5, shots=1, queries=1)
    with pytest.raises(MetabenchError, match="impossible episode"):
        metabench.evaluate_on_images(model, own_characters[:3], ways=5, shots=1, queries=1)


def test_load_model_without_weights_says_why(tmp_path: Path) -> None:
    from metabench import results
    from tests.test_results import minimal

    path = results.write_atomic(minimal(), tmp_path / "r.json")
    with pytest.raises(MetabenchError, match="weights"):
        metabench.load_model(path)
