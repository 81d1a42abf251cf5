"""A labelled image set as a task source: plain supervised learning through the episode runner.

Supervised benchmarks (the HyperNetworks MNIST convnet) train on minibatches and are scored per test
image, which the runner's episode machinery expresses without a second loop: a *task* is ``queries``
labelled examples with no support set (``shots = 0``), its labels are the dataset's own classes
(``ways`` = the number of classes), and

* training batches come from a :class:`MinibatchSampler`, which walks through seeded permutations of
  the part (epochs: every example once before any repeats, as the papers train) and applies the
  part's augmentation, drawn from its own generator so that a resumed run draws the same crops;
* the frozen test tasks are the part's examples, ``queries`` at a time (one each for a test set, so
  that the per-task scores are per-example scores and their mean and 95% interval are the test
  error and its interval), in an order fixed by the test seed and identified by a digest.

Augmentation lives here, with the training batches, rather than in a reproduction: it is part of the
data protocol of a split (the paper pads and crops the training images, never the validation or test
ones), its randomness then comes from the checkpointed sampler on the data's device (a reproduction
would draw from the global RNG, which the runner restores only on the CPU), and the model stays a
model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from metabench.episodes import EpisodeBatch, EpisodeShape
from metabench.errors import MetabenchError
from metabench.tasks import FrozenTasks, frozen_generator, task_digest

CPU = torch.device("cpu")


@dataclass(frozen=True)
class LabelledImages:
    """One part of a labelled image set on one device.

    ``images`` is ``uint8 [n, H, W]`` (ink high, as the datasets ship), ``labels`` ``int64 [n]`` in
    ``0..classes-1``. ``pad`` > 0 makes training batches random crops of the images padded with
    ``pad`` zero pixels on every side (``pad = 1``: 28x28 padded to 30x30, cropped back to 28x28).
    """

    name: str
    images: Tensor
    labels: Tensor
    classes: int
    pad: int = 0

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: torch.device | str) -> LabelledImages:
        return LabelledImages(self.name, self.images.to(device), self.labels.to(device), self.classes, self.pad)

    def check_shape(self, shape: EpisodeShape) -> None:
        if shape.ways != self.classes or shape.shots != 0 or shape.queries < 1 or shape.sequence:
            raise MetabenchError(
                f"impossible task for the labelled set {self.name!r}: {shape.ways} ways, {shape.shots} shots, "
                f"{shape.queries} queries",
                f"a supervised task has ways = {self.classes} (the classes), shots = 0 and queries = examples per task",
            )
        if shape.queries > len(self):
            raise MetabenchError(
                f"a task of {shape.queries} examples is larger than the {self.name} part ({len(self)} examples)",
                f"use at most {len(self)} queries",
            )

    def digest(self) -> str:
        """sha256 of the pixels and labels: the same examples in the same order give the same digest."""
        digest = hashlib.sha256(self.images.cpu().contiguous().numpy().tobytes())
        digest.update(self.labels.cpu().to(torch.int64).numpy().tobytes())
        return digest.hexdigest()

    def batch(self, index: Tensor, crops: Tensor | None = None) -> EpisodeBatch:
        """Tasks of the examples at ``index`` (``[B, queries]``): images float in [0, 1] ``[B, q, 1, H, W]``.

        ``crops`` (``[B, q, 2]``, offsets in ``0..2 * pad``) cuts each image out of its padded copy.
        """
        index = index.to(self.device)
        images = self.images[index].float().div_(255.0)  # [B, q, H, W]
        if crops is not None:
            images = crop(images, crops.to(self.device), self.pad)
        size = index.shape[0]
        height, width = images.shape[-2:]
        return EpisodeBatch(
            support_x=images.new_zeros(size, 0, 1, height, width),
            support_y=self.labels.new_zeros(size, 0),
            query_x=images.unsqueeze(2),
            query_y=self.labels[index],
            ways=self.classes,
            shots=0,
        )

    def sampler(self, shape: EpisodeShape, seed: int) -> MinibatchSampler:
        return MinibatchSampler(self, shape, seed)

    def freeze(self, shape: EpisodeShape, count: int, seed: int, key: dict[str, object]) -> FrozenExamples:
        """``count`` tasks of ``shape.queries`` distinct examples each, in an order drawn on the CPU from ``seed``.

        A frozen test set is never augmented. Asking for more examples than the part holds is an error.
        """
        self.check_shape(shape)
        needed = count * shape.queries
        if needed > len(self):
            raise MetabenchError(
                f"{count} tasks of {shape.queries} examples need {needed} examples; the {self.name} part has "
                f"{len(self)}",
                f"use at most {len(self) // shape.queries} test tasks",
            )
        index = torch.randperm(len(self), generator=frozen_generator(seed))[:needed].view(count, shape.queries)
        full_key = {**key, "ways": shape.ways, "shots": 0, "queries": shape.queries, "seed": seed, "count": count}
        return FrozenExamples(full_key, index, task_digest(full_key, self.digest(), index))


def crop(images: Tensor, offsets: Tensor, pad: int) -> Tensor:
    """Each ``[..., H, W]`` image padded with ``pad`` zeros per side, then cut at its ``(row, col)`` offset."""
    height, width = images.shape[-2:]
    flat = F.pad(images.reshape(-1, height, width), (pad, pad, pad, pad))
    offsets = offsets.reshape(-1, 2)
    rows = offsets[:, :1] + torch.arange(height, device=images.device)  # [N, H]
    cols = offsets[:, 1:] + torch.arange(width, device=images.device)  # [N, W]
    which = torch.arange(flat.shape[0], device=images.device).view(-1, 1, 1)
    return flat[which, rows.unsqueeze(-1), cols.unsqueeze(1)].view_as(images)


class MinibatchSampler:
    """Minibatches of a labelled part: epochs of seeded permutations, augmented if the part says so.

    Two generators on the part's device: one orders the examples, one draws the crops. Its state is
    the order generator's state at the start of the current epoch, the position in that epoch and the
    crop generator's state; :meth:`restore` redraws the epoch's permutation from the first, so a
    resumed run continues with exactly the batches an uninterrupted run would have drawn.
    """

    def __init__(self, part: LabelledImages, shape: EpisodeShape, seed: int) -> None:
        part.check_shape(shape)
        self.part, self.shape = part, shape
        self.order = torch.Generator(device=part.device).manual_seed(seed)
        self.crops = torch.Generator(device=part.device).manual_seed(seed + 1)
        self._new_epoch()

    def _new_epoch(self) -> None:
        self._epoch_start = self.order.get_state()
        self._permutation = torch.randperm(len(self.part), generator=self.order, device=self.part.device)
        self._position = 0

    def _take(self, count: int) -> Tensor:
        taken = []
        while count > 0:
            if self._position == len(self.part):
                self._new_epoch()
            chunk = self._permutation[self._position : self._position + count]
            self._position += chunk.numel()
            count -= chunk.numel()
            taken.append(chunk)
        return torch.cat(taken)

    def sample(self, count: int) -> EpisodeBatch:
        """``count`` minibatches (tasks) of ``queries`` examples each."""
        index = self._take(count * self.shape.queries).view(count, self.shape.queries)
        offsets = None
        if self.part.pad:
            offsets = torch.randint(
                0, 2 * self.part.pad + 1, (count, self.shape.queries, 2), generator=self.crops, device=self.part.device
            )
        return self.part.batch(index, offsets)

    def state(self) -> Tensor:
        position = torch.tensor([self._position], dtype=torch.int64).view(torch.uint8)
        return torch.cat([self._epoch_start.cpu(), position, self.crops.get_state().cpu()])

    def restore(self, state: Tensor) -> None:
        size = self._epoch_start.numel()
        self.order.set_state(state[:size].clone())
        self._permutation = torch.randperm(len(self.part), generator=self.order, device=self.part.device)
        self._epoch_start = state[:size].clone()
        self._position = int(state[size : size + 8].clone().view(torch.int64))
        self.crops.set_state(state[size + 8 :].clone())


@dataclass(frozen=True)
class FrozenExamples(FrozenTasks[LabelledImages]):
    """Fixed test tasks (which examples, ``[count, queries]``) of a labelled part, and their digest."""

    key: dict[str, object]
    index: Tensor
    digest: str

    @property
    def count(self) -> int:
        return int(self.index.shape[0])

    def tasks(self, part: LabelledImages, start: int, stop: int) -> EpisodeBatch:
        return part.batch(self.index[start:stop])
