"""MANN's LRUA memory on cases small enough to compute by hand, and the model's sequence contract."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import metabench
from metabench.episodes import EpisodeSampler, EpisodeShape, as_sequence, freeze, instance_numbers, sample_index
from metabench.errors import InterruptedRun
from metabench.reproduction import TaskInfo
from metabench.reproductions.mann import (
    MANN,
    MANNHyperparameters,
    MemoryState,
    cosine_read_weights,
    least_used,
    lrua_step,
    translate,
)
from tests.test_episodes import decode, labelled_bank

NEVER = -30.0  # a gate logit whose sigmoid is ~1e-13: write only to the least-used slots


def state(memory: list[list[float]], usage: list[float], read_weights: list[float] | None = None) -> MemoryState:
    m = torch.tensor([memory])
    u = torch.tensor([usage])
    r = torch.zeros(1, 1, len(usage)) if read_weights is None else torch.tensor([[read_weights]])
    return MemoryState(m, u, r)


def test_read_weights_sum_to_one_and_follow_cosine_similarity() -> None:
    torch.manual_seed(0)
    weights = cosine_read_weights(torch.randn(3, 4, 5), torch.randn(3, 7, 5))
    assert torch.allclose(weights.sum(-1), torch.ones(3, 4))
    # key (2, 0) against slots (1, 0), (0, 3), (-1, 0): cosines 1, 0, -1, scale-free
    hand = cosine_read_weights(torch.tensor([[[2.0, 0.0]]]), torch.tensor([[[1.0, 0.0], [0.0, 3.0], [-1.0, 0.0]]]))
    expected = torch.tensor([math.e, 1.0, 1 / math.e]) / (math.e + 1.0 + 1 / math.e)
    assert torch.allclose(hand[0, 0], expected)


def test_least_used_marks_the_n_smallest_usages() -> None:
    usage = torch.tensor([[0.5, 0.1, 0.9, 0.3]])
    assert least_used(usage, 1).tolist() == [[0.0, 1.0, 0.0, 0.0]]
    assert least_used(usage, 2).tolist() == [[0.0, 1.0, 0.0, 1.0]]
    assert least_used(torch.zeros(1, 3), 1).tolist() == [[1.0, 0.0, 0.0]], "ties go to the first slot"


def test_the_least_used_slot_is_zeroed_then_written() -> None:
    before = state([[1.0, 1.0], [5.0, 5.0], [2.0, 2.0]], usage=[0.7, 0.2, 0.9])
    key = torch.tensor([[[0.3, -0.4]]])
    _, after = lrua_step(before, key, torch.tensor([[NEVER]]), gamma=0.99)
    # slot 1 had the least usage: its old (5, 5) is gone and the key is all that is there
    assert torch.allclose(after.memory[0, 1], key[0, 0], atol=1e-6)
    assert torch.equal(after.memory[0, 0], before.memory[0, 0])
    assert torch.equal(after.memory[0, 2], before.memory[0, 2])


def test_the_gate_interpolates_between_last_read_and_least_used() -> None:
    before = state([[0.0, 0.0]] * 3, usage=[0.4, 0.1, 0.6], read_weights=[0.0, 0.0, 1.0])
    key = torch.tensor([[[1.0, 0.0]]])
    _, after = lrua_step(before, key, torch.tensor([[0.0]]), gamma=0.99)  # sigma(0) = 1/2
    # write weights = 0.5 * last read (slot 2) + 0.5 * least used (slot 1)
    assert torch.allclose(after.memory[0, :, 0], torch.tensor([0.0, 0.5, 0.5]))


def test_usage_decays_by_gamma_and_adds_this_steps_reads_and_writes() -> None:
    before = state([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], usage=[0.5, 0.25, 1.0])
    key = torch.tensor([[[1.0, 0.0]]])
    _, after = lrua_step(before, key, torch.tensor([[NEVER]]), gamma=0.5)
    write = torch.tensor([0.0, 1.0, 0.0])  # slot 1 is least used; the near-zero gate ignores the last read
    # after the write, slot 0 = (1, 0), slot 1 = (1, 0), slot 2 = 0: cosines 1, 1, 0
    read = torch.tensor([math.e, math.e, 1.0]) / (2 * math.e + 1.0)
    expected = 0.5 * torch.tensor([0.5, 0.25, 1.0]) + read + write
    assert torch.allclose(after.usage[0], expected, atol=1e-6)
    assert torch.allclose(after.read_weights[0, 0], read, atol=1e-6)


def test_a_write_then_a_read_with_the_same_key_returns_what_was_written() -> None:
    memory = MemoryState.blank(1, 1, 3, 2, torch.device("cpu"))
    first, second = torch.tensor([[[0.6, 0.8]]]), torch.tensor([[[0.8, -0.6]]])  # unit, orthogonal
    _, memory = lrua_step(memory, first, torch.tensor([[NEVER]]), gamma=0.99)
    _, memory = lrua_step(memory, second, torch.tensor([[NEVER]]), gamma=0.99)
    assert torch.allclose(memory.memory[0, 0], first[0, 0]) and torch.allclose(memory.memory[0, 1], second[0, 0])
    # a pure read (the write goes to the empty slot 2 with a zero key is not possible: write `first`
    # again and read): cosines with `first` are 1 (slot 0), 0 (slot 1) and 1 (slot 2, just written)
    reads, memory = lrua_step(memory, first, torch.tensor([[NEVER]]), gamma=0.99)
    weights = torch.tensor([math.e, 1.0, math.e]) / (2 * math.e + 1.0)
    assert torch.allclose(memory.read_weights[0, 0], weights, atol=1e-6)
    expected = (weights[0] + weights[2]) * first[0, 0] + weights[1] * second[0, 0]
    assert torch.allclose(reads[0, 0], expected, atol=1e-6)
    assert torch.cosine_similarity(reads[0, 0], first[0, 0], dim=0) > 0.98


def test_translate_shifts_without_wrapping() -> None:
    torch.manual_seed(0)
    image = torch.zeros(200, 1, 5, 5)
    image[:, 0, 2, 2] = 1.0
    moved = translate(image, 1)
    assert torch.equal(moved.sum((1, 2, 3)), torch.ones(200)), "the ink moves, it is never cut or duplicated"
    where = moved[:, 0].flatten(1).argmax(1)
    rows, cols = where // 5, where % 5
    assert set(rows.tolist()) == {1, 2, 3} and set(cols.tolist()) == {1, 2, 3}


def test_sequence_episodes_are_shuffled_and_each_class_comes_back_exactly_per_class_times() -> None:
    batch = EpisodeSampler(labelled_bank(), EpisodeShape(5, 1, 9, sequence=True), seed=0).sample(4)
    images, labels = as_sequence(batch)
    assert images.shape[:2] == (4, 50) and labels.shape == (4, 50)
    classes, examples = decode(images)
    for episode in range(4):
        assert torch.bincount(labels[episode], minlength=5).tolist() == [10] * 5
        for label in range(5):  # one class per label, ten distinct drawings of it
            assert classes[episode][labels[episode] == label].unique().numel() == 1
            assert examples[episode][labels[episode] == label].unique().numel() == 10
    assert not torch.equal(labels[0], labels[1]), "each episode has its own order"
    numbers = instance_numbers(labels, 5)
    assert all(sorted(row.tolist()) == sorted(list(range(1, 11)) * 5) for row in numbers)
    assert numbers[0][labels[0] == labels[0, 0]].tolist() == list(range(1, 11))


def test_set_episodes_and_their_digests_do_not_change_when_sequences_exist() -> None:
    """The order is drawn after classes and examples, so a sequence episode has the same examples as
    the set episode with the same seed, and set episodes keep their digests."""
    bank = labelled_bank()
    sets = sample_index(30, 20, EpisodeShape(5, 1, 9), 3, torch.Generator().manual_seed(4))
    seqs = sample_index(30, 20, EpisodeShape(5, 1, 9, sequence=True), 3, torch.Generator().manual_seed(4))
    assert torch.equal(sets.classes, seqs.classes) and torch.equal(sets.examples, seqs.examples)
    assert sets.order is None and seqs.order is not None
    key = {"dataset": "synthetic"}
    plain = freeze(bank, EpisodeShape(5, 1, 9), 3, 4, key)
    ordered = freeze(bank, EpisodeShape(5, 1, 9, sequence=True), 3, 4, key)
    assert plain.digest != ordered.digest and "sequence" not in plain.key


@pytest.mark.parametrize("memory", [True, False])
def test_prediction_at_a_step_never_depends_on_its_own_label(memory: bool) -> None:
    """The label of step t arrives at step t + 1: changing it cannot change the output at t."""
    torch.manual_seed(0)
    model = MANN(
        MANNHyperparameters(controller=16, memory_slots=8, memory_width=4, memory=memory), TaskInfo(1, 5, 3, 1)
    )
    images, labels = torch.rand(2, 6, 1, 5, 5), torch.randint(0, 3, (2, 6))
    changed = labels.clone()
    changed[:, 3] = (changed[:, 3] + 1) % 3
    a, b = model(images, labels), model(images, changed)
    assert torch.allclose(a[:, :4], b[:, :4])
    assert not torch.allclose(a[:, 4:], b[:, 4:]), "later steps do see it"


def test_memory_is_wiped_between_episodes() -> None:
    torch.manual_seed(0)
    model = MANN(MANNHyperparameters(controller=16, memory_slots=8, memory_width=4), TaskInfo(1, 5, 3, 1))
    images, labels = torch.rand(3, 6, 1, 5, 5), torch.randint(0, 3, (3, 6))
    together = model(images, labels)
    alone = torch.cat([model(images[i : i + 1], labels[i : i + 1]) for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-6)


@pytest.mark.data
def test_a_stopped_and_resumed_mann_run_scores_every_instance_as_an_uninterrupted_one(
    data_dir: Path, tmp_path: Path
) -> None:
    straight, _ = metabench.run_benchmark("mann", profile="smoke", output=tmp_path / "a")
    with pytest.raises(InterruptedRun, match="stopped after step 30"):
        metabench.run_benchmark("mann", profile="smoke", output=tmp_path / "b", stop_after=30)
    resumed, _ = metabench.run_benchmark("mann", profile="smoke", output=tmp_path / "b", resume=True)
    assert resumed["scores"] == straight["scores"]
    assert [c["scores"] for c in resumed["components"]] == [c["scores"] for c in straight["components"]]
    assert [c["name"] for c in straight["components"]] == ["1st", "2nd", "3rd", "4th", "5th", "10th"]


def _two_heads() -> tuple[MemoryState, torch.Tensor]:
    blank = MemoryState(torch.zeros(1, 4, 2), torch.tensor([[0.5, 0.1, 0.9, 0.2]]), torch.zeros(1, 2, 4))
    keys = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # head 0 and head 1, orthogonal
    return blank, keys


def test_eq_6_as_written_gives_every_head_all_n_least_used_slots() -> None:
    """Issue 16: with n heads the paper's multi-hot w^lu makes the n least-used slots (1 and 3 here)
    receive the same sum of all heads' keys; this is the default, the paper's form."""
    blank, keys = _two_heads()
    _, after = lrua_step(blank, keys, torch.full((1, 2), NEVER), gamma=0.99)
    assert torch.allclose(after.memory[0, 1], torch.tensor([1.0, 1.0]), atol=1e-6)
    assert torch.allclose(after.memory[0, 3], torch.tensor([1.0, 1.0]), atol=1e-6)
    assert torch.allclose(after.memory[0, [0, 2]], torch.zeros(2, 2))


def test_per_head_least_used_gives_head_h_the_hth_least_used_slot() -> None:
    """tristandeleu/ntm-one-shot's reading: head 0 writes to the least-used slot (1), head 1 to the next (3)."""
    blank, keys = _two_heads()
    _, after = lrua_step(blank, keys, torch.full((1, 2), NEVER), gamma=0.99, per_head=True)
    assert torch.allclose(after.memory[0, 1], torch.tensor([1.0, 0.0]), atol=1e-6)
    assert torch.allclose(after.memory[0, 3], torch.tensor([0.0, 1.0]), atol=1e-6)
    # usage: decayed old usage + both heads' read weights + one unit of writing in each written slot
    reads = after.read_weights.sum(1)
    expected = 0.99 * torch.tensor([[0.5, 0.1, 0.9, 0.2]]) + reads + torch.tensor([[0.0, 1.0, 0.0, 1.0]])
    assert torch.allclose(after.usage, expected, atol=1e-6)


def test_mann_model_runs_with_per_head_least_used() -> None:
    torch.manual_seed(0)
    hp = MANNHyperparameters(controller=8, memory_slots=6, memory_width=3, read_heads=2, least_used_per_head=True)
    model = MANN(hp, TaskInfo(1, 4, 3, 1))
    logits = model(torch.rand(2, 5, 1, 4, 4), torch.randint(0, 3, (2, 5)))
    assert logits.shape == (2, 5, 3) and torch.isfinite(logits).all()


def test_forget_bias_shifts_only_the_controllers_forget_gate_at_initialisation() -> None:
    """``forget_bias = 1`` starts the forget gate at sigmoid(1 + b) as TensorFlow's BasicLSTMCell does,
    and changes no other parameter: the same seed with and without it differs by exactly 1 there."""
    hp = MANNHyperparameters(controller=8, memory_slots=6, memory_width=3, read_heads=2)
    torch.manual_seed(0)
    plain = MANN(hp, TaskInfo(1, 4, 3, 1))
    torch.manual_seed(0)
    biased = MANN(MANNHyperparameters(**{**hp.__dict__, "forget_bias": 1.0}), TaskInfo(1, 4, 3, 1))
    for (name, a), (_, b) in zip(plain.named_parameters(), biased.named_parameters(), strict=True):
        expected = a.detach().clone()
        if name == "controller.bias_hh":
            expected[8:16] += 1.0
        assert torch.equal(b.detach(), expected), name
    # the gate itself, from a zero state and zero input: sigmoid of the two biases' forget slices
    cell = biased.controller
    gates = cell.bias_ih + cell.bias_hh
    _, c = cell(torch.zeros(1, cell.input_size), (torch.zeros(1, 8), torch.ones(1, 8)))
    forget = torch.sigmoid(gates[8:16])
    cell_in = torch.tanh(gates[16:24]) * torch.sigmoid(gates[:8])
    assert torch.allclose(c[0], forget + cell_in, atol=1e-6)


def test_addressing_before_the_write_does_not_find_the_key_just_written() -> None:
    """After the write, the slot just written holds this step's key, so addressing there finds it with
    cosine 1; addressing the memory as it was before the write (snowkylin/ntm) weighs that slot as the
    empty slot it was, and still reads the written memory."""
    old = state([[1.0, 0.0], [0.0, 0.0]], usage=[0.5, 0.0])
    key = torch.tensor([[[0.0, 1.0]]])
    _, after = lrua_step(old, key, torch.tensor([[NEVER]]), gamma=0.99)
    reads, before = lrua_step(old, key, torch.tensor([[NEVER]]), gamma=0.99, address_before_write=True)
    # both wrote the key into the least-used slot 1
    assert torch.equal(after.memory, before.memory) and torch.equal(before.memory[0, 1], key[0, 0])
    e = math.e
    assert torch.allclose(after.read_weights[0, 0], torch.tensor([1 / (1 + e), e / (1 + e)]))  # cos 0 and 1
    assert torch.allclose(before.read_weights[0, 0], torch.tensor([0.5, 0.5]))  # cos 0 with slot 0, slot 1 empty
    assert torch.allclose(reads[0, 0], 0.5 * before.memory[0, 0] + 0.5 * before.memory[0, 1])
