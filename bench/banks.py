"""The data stage: a split's parts, loaded once per run and moved to the device when first asked for."""

from __future__ import annotations

from pathlib import Path

import torch

from metabench import data
from metabench.episodes import EpisodeShape
from metabench.errors import MetabenchError, did_you_mean
from metabench.spec import Benchmark, Profile
from metabench.tasks import Frozen, TaskSource


class Banks:
    """The split's parts on the device, loaded once per run (benchmarks sharing a training share them)."""

    def __init__(
        self, bench: Benchmark, data_dir: Path | None, device: torch.device, *, download: bool, progress: bool
    ) -> None:
        # through the module, not a name bound at import, so that a test's stand-in is seen and undone
        self.cpu = data.load_parts(
            bench.dataset, bench.split, bench.image_size, data_dir, download=download, progress=progress
        )
        self.device = device
        self._on_device: dict[str, TaskSource] = {}

    def get(self, part: str, where: str) -> TaskSource:
        if part not in self.cpu:
            raise MetabenchError(f"{where}: split has no part {part!r}", did_you_mean(part, list(self.cpu)))
        if part not in self._on_device:
            self._on_device[part] = self.cpu[part].to(self.device)
        return self._on_device[part]

    def test_episodes(self, bench: Benchmark, profile: Profile) -> tuple[Frozen, TaskSource]:
        """``bench``'s frozen test episodes under ``profile`` and the bank they index."""
        bank = self.get(bench.test_part, f"{bench.id}.test_part")
        shape = EpisodeShape(bench.ways, bench.shots, bench.queries, bench.sequence)
        key = {"dataset": bench.dataset, "split": bench.split, "part": bench.test_part, "image_size": bench.image_size}
        return bank.freeze(shape, profile.test_episodes, bench.test_seed, key), bank
