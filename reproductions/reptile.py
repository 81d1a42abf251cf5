"""Reptile (Nichol, Achiam & Schulman 2018, "On First-Order Meta-Learning Algorithms", final version).

Each task of a meta-batch trains a copy of the initialisation with Adam (``beta1 = 0``) on mini-batches
of its own examples (``train_shots`` per class, more than the test shots); the initialisation then
moves toward the mean of the adapted weights: ``theta <- theta + eps (mean(phi) - theta)``. That update
is plain SGD with learning rate ``eps`` on the "Reptile gradient" ``theta - mean(phi)``, so
:meth:`Reptile.meta_loss` returns ``0.5 * ||theta - stopgrad(mean(phi))||^2``, whose gradient is
exactly that, and the runner's optimiser (SGD, ``eps`` annealed linearly to 0 by the spec's
``lr_schedule = "linear"``) does the rest. The inner loops run on :mod:`metabench.inner`.

Adam's second moments are not reset between tasks in the paper's code (only its trainable variables
are restored per task); here they are a buffer that every task of a meta-batch starts from and that
takes the mean of the tasks' final moments afterwards (the code runs the tasks one after another, so
each starts from its predecessor's: the one documented difference). Evaluation starts from the
trained moments and does not change them (the code backs them up and restores them around it).

Batch norm always uses the statistics of the batch it sees (TensorFlow ``training=True`` in the code).
Evaluation is ``transductive`` (all queries of a task in one batch) or not: each query is classified in
a batch of the support set plus that one query, as the paper's code does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from metabench.episodes import EpisodeBatch
from metabench.inner import Adam, Params, adapt, forward, meta_parameters, resolve_path
from metabench.reproduction import Reproduction, StepOutput, TaskInfo
from metabench.reproductions.gbml_nets import ConvNet


@dataclass(frozen=True)
class ReptileHyperparameters:
    backbone: Literal["conv4-strided", "conv4-pool"] = "conv4-strided"
    hidden: int = 64
    inner_lr: float = 0.001
    inner_batch: int = 10
    inner_steps: int = 5
    eval_inner_batch: int = 5
    eval_inner_steps: int = 50
    beta1: float = 0.0
    beta2: float = 0.999
    transductive: bool = False
    engine: Literal["auto", "batched", "loop"] = "auto"


def minibatch_indices(
    tasks: int, examples: int, batch: int, steps: int, device: torch.device, generator: torch.Generator | None = None
) -> Tensor:
    """``[tasks, steps, batch]`` indices: each task's examples reshuffled every pass and cut into consecutive
    mini-batches that may straddle two passes (Reptile's ``_mini_batches`` without replacement)."""
    passes = -(-steps * batch // examples)
    order = torch.rand(tasks, passes, examples, device=device, generator=generator).argsort(-1).flatten(1)
    return order[:, : steps * batch].reshape(tasks, steps, batch)


EVAL_ORDER_SEED = 0


class Reptile(Reproduction):
    Hyperparameters = ReptileHyperparameters
    needs_grad_at_test = True

    def __init__(self, hparams: ReptileHyperparameters, task: TaskInfo) -> None:
        super().__init__(hparams, task)
        strided = hparams.backbone == "conv4-strided"
        # Nichol et al.'s networks flatten the last feature map (Omniglot: 64 x 2 x 2).
        self.net = ConvNet(
            task.channels, hparams.hidden, task.ways, task.image_size, strided=strided, head="flatten", norm="batch"
        )
        self.moments = nn.Module()
        for name, p in self.net.named_parameters():
            self.moments.register_buffer(self._key(name), torch.zeros_like(p))
        self.register_buffer("adam_steps", torch.zeros((), dtype=torch.long))

    @staticmethod
    def _key(name: str) -> str:
        return name.replace(".", "__")

    def _adam_state(self, params: Params) -> tuple[Params, Params, int]:
        v = {k: getattr(self.moments, self._key(k)) for k in params}
        return ({k: torch.zeros_like(p) for k, p in params.items()}, v, int(self.adam_steps))

    def _adapt(
        self, x: Tensor, y: Tensor, batch: int, steps: int, generator: torch.Generator | None = None
    ) -> tuple[Params, Params | None]:
        hp = self.hparams
        params = {k: p.detach() for k, p in meta_parameters(self.net).items()}
        indices = minibatch_indices(x.shape[0], x.shape[1], batch, steps, x.device, generator)
        adapted, state = adapt(
            self.net,
            params,
            x,
            y,
            F.cross_entropy,
            steps=steps,
            lr=Adam(hp.inner_lr, hp.beta1, hp.beta2),
            first_order=True,
            path=hp.engine,
            batches=indices,
            adam_state=self._adam_state(params),
        )
        return {k: p.detach() for k, p in adapted.items()}, state.v

    def meta_loss(self, batch: EpisodeBatch) -> StepOutput:
        hp = self.hparams
        with torch.enable_grad():
            adapted, v = self._adapt(batch.support_x, batch.support_y, hp.inner_batch, hp.inner_steps)
        with torch.no_grad():
            assert v is not None
            for k, moment in v.items():
                getattr(self.moments, self._key(k)).copy_(moment.mean(0))
            self.adam_steps += hp.inner_steps
            logits = forward(self.net, adapted, batch.query_x, hp.engine)
            accuracy = (logits.argmax(-1) == batch.query_y).float().mean() * 100.0
        params = meta_parameters(self.net)
        loss = sum(0.5 * (p - adapted[k].mean(0)).pow(2).sum() for k, p in params.items())
        assert isinstance(loss, Tensor)
        return StepOutput(loss, accuracy)

    def predict(self, batch: EpisodeBatch) -> Tensor:
        hp = self.hparams
        # The mini-batch order at test comes from a fixed seed, so that scoring the same frozen episodes
        # (in the same batches) twice gives the same numbers, whatever the global random state.
        generator = torch.Generator(device=batch.support_x.device).manual_seed(EVAL_ORDER_SEED)
        with torch.enable_grad():
            adapted, _ = self._adapt(
                batch.support_x, batch.support_y, hp.eval_inner_batch, hp.eval_inner_steps, generator
            )
        with torch.no_grad():
            if hp.transductive:
                return forward(self.net, adapted, batch.query_x, hp.engine)
            return self._per_query(adapted, batch.support_x, batch.query_x)

    def _per_query(self, adapted: Params, support: Tensor, queries: Tensor) -> Tensor:
        """Each query classified in a batch of its task's support set plus itself (no transduction)."""
        buffers = dict(self.net.named_buffers())

        def one_query(p: Params, s: Tensor, q: Tensor) -> Tensor:
            return functional_call(self.net, (p, buffers), (torch.cat([s, q.unsqueeze(0)]),))[-1]

        def one_task(p: Params, s: Tensor, qs: Tensor) -> Tensor:
            return vmap(one_query, in_dims=(None, None, 0))(p, s, qs)

        if resolve_path(self.hparams.engine, support.device) == "batched":
            return vmap(one_task)(adapted, support, queries)
        return torch.stack(
            [one_task({k: t[i] for k, t in adapted.items()}, support[i], queries[i]) for i in range(support.shape[0])]
        )
