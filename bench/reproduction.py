"""The interface every paper's reproduction implements, and nothing more.

A reproduction is an ``nn.Module`` holding a paper's model and learning algorithm. The runner owns the
loop, the optimiser and its schedule, checkpoints, progress and evaluation; a reproduction only says
(1) the meta-training loss on a batch of episodes, which the runner backpropagates and steps, and
(2) its predictions on an episode batch's queries after adapting to the support set.

Two optional hooks tell a reproduction what the runner does around it, so that none has to guess:
:meth:`Reproduction.start_batch` (a batch was sampled and this many steps will be taken on it) and
:meth:`Reproduction.weights_changed` (an optimiser step or a loaded state dict changed the weights).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor, nn

from metabench.episodes import EpisodeBatch
from metabench.errors import SpecError


@dataclass(frozen=True)
class TaskInfo:
    """What a model must know about its inputs before it sees any."""

    channels: int
    image_size: int
    ways: int
    shots: int


@dataclass(frozen=True)
class StepOutput:
    """A meta-training step's differentiable loss and the training score on its queries, in the benchmark's
    metric: accuracy (%) for classification, an MSE, a loss or a log-likelihood otherwise (hence ``score``,
    not ``accuracy``, which it was called until issue 17)."""

    loss: Tensor
    score: Tensor


class Reproduction(nn.Module):
    """Base class of every paper's model and algorithm.

    Subclasses declare ``Hyperparameters``, a dataclass of their own settings: the spec's
    ``[profiles.NAME.model]`` table is checked against it, so a misspelt key is an error, not a default.
    ``needs_grad_at_test`` is true for methods that take gradient steps while predicting (MAML).
    """

    Hyperparameters: ClassVar[type]
    needs_grad_at_test: ClassVar[bool] = False

    def __init__(self, hparams: Any, task: TaskInfo) -> None:
        super().__init__()
        self.hparams = hparams
        self.task = task
        self.register_load_state_dict_post_hook(_loaded)

    @classmethod
    def build(cls, model_table: dict[str, Any], task: TaskInfo, where: str = "model") -> Reproduction:
        """Construct from a spec's ``model`` table, refusing keys the paper does not define."""
        fields = {f.name for f in dataclasses.fields(cls.Hyperparameters)}
        unknown = sorted(set(model_table) - fields)
        if unknown:
            raise SpecError(
                f"{where}.{unknown[0]}: {cls.__name__} has no such setting (known: {', '.join(sorted(fields))})"
            )
        try:
            hparams = cls.Hyperparameters(**model_table)
        except TypeError as error:
            raise SpecError(f"{where}: {error}") from None
        return cls(hparams, task)

    def start_batch(self, batch: EpisodeBatch, steps: int) -> None:
        """Optional: the runner has sampled ``batch`` and takes ``steps`` optimiser steps on it next (the
        profile's ``steps_per_batch``), calling :meth:`meta_loss` with it once per step.

        A reproduction that carries state from one of those steps to the next (a learned optimizer's
        problems along their truncated-backpropagation trajectory) starts it afresh here. Checkpoints and
        interrupts fall only between batches, so what is carried within one is never saved. The default
        carries nothing.
        """

    def meta_loss(self, batch: EpisodeBatch) -> StepOutput:
        """The loss whose gradient the runner's optimiser follows, averaged over the batch."""
        raise NotImplementedError

    def weights_changed(self) -> None:
        """Optional: the weights have just changed, so anything computed from the old ones is stale.

        The runner calls it after every optimiser step, and loading a state dict (a checkpoint, the
        early-stopping weights) calls it too. A caller that changes the weights in some other way calls
        it itself. The default caches nothing.
        """

    def predict(self, batch: EpisodeBatch) -> Tensor:
        """Logits ``[B, queries, ways]`` for each episode's queries, after adapting to its support set."""
        raise NotImplementedError

    def embed(self, images: Tensor) -> Tensor | None:
        """Optional: per-image features ``[n, ...]`` that do not depend on the episode at test time.

        Metric-based methods define this together with :meth:`predict_embedded`; the evaluator then
        embeds every test image once instead of once per episode it appears in, which is what makes a
        1000-episode 20-way evaluation take seconds rather than minutes. ``None`` means: not supported.
        """
        return None

    def predict_embedded(self, batch: EpisodeBatch) -> Tensor:
        """Like :meth:`predict`, for a batch whose ``support_x``/``query_x`` hold :meth:`embed` outputs."""
        raise NotImplementedError

    def competitors(self) -> tuple[str, ...]:
        """Names of other methods this model also predicts as, for claim benchmarks (default: none).

        A claim ("the learned optimizer beats tuned Adam") is measured in one run on the same frozen
        tasks: the reproduction holds or trains the competitors too and answers
        :meth:`predict_competitor` for each name listed here.
        """
        return ()

    def predict_competitor(self, name: str, batch: EpisodeBatch) -> Tensor:
        """A competitor's predictions on ``batch``, in the same form as :meth:`predict`."""
        raise NotImplementedError(f"{type(self).__name__} has no competitor {name!r}")

    def figures(self, batch: EpisodeBatch, result_path: Path) -> list[Path]:
        """Optional: draw figures of the trained model on the first test batch, beside ``result_path``.

        The runner calls this after evaluation, with the model in evaluation mode, and records the
        returned files' names in the result, where ``compare`` links them. The default draws nothing.
        """
        return []

    def learned(self) -> dict[str, Any]:
        """Optional: what the trained model learned that a reader should see (e.g. the per-layer shrinkage
        variances of Chen et al.), JSON-ready. The runner prints it and stores it in the result under
        ``learned``; the default has nothing to say."""
        return {}

    @property
    def embeds_independently(self) -> bool:
        return type(self).embed is not Reproduction.embed


def _loaded(module: nn.Module, _incompatible: Any) -> None:
    """``load_state_dict``'s post-hook on every reproduction: the loaded weights replace the old ones."""
    if isinstance(module, Reproduction):
        module.weights_changed()
