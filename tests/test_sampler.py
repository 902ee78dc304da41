"""The distributed, resumable sampler: disjoint ranks, whole epochs, exact continuation, elastic resume."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from asymvae.data.sampler import PositionError, ResumableBatchSampler


def take(sampler: ResumableBatchSampler, n: int) -> list[list[tuple[int, int]]]:
    return list(itertools.islice(iter(sampler), n))


def consume(world: int, steps: int, size: int = 20, bs: int = 3, state: dict | None = None) -> tuple[list, dict]:
    """`steps` global batches on `world` ranks, from `state`; returns the (epoch, index) keys used and the state."""
    ranks = [ResumableBatchSampler(size, bs, world, r, seed=1) for r in range(world)]
    if state is not None:
        for sampler in ranks:
            sampler.load_state_dict(state)
    per_rank = [take(s, steps) for s in ranks]
    for _ in range(steps):
        ranks[0].advance()
    return [key for step in zip(*per_rank, strict=True) for batch in step for key in batch], ranks[0].state_dict()


def test_ranks_are_disjoint_and_every_image_is_used_once_per_epoch():
    used, _ = consume(world=2, steps=10)  # 60 samples = 3 epochs of 20, batches crossing epoch ends
    assert Counter(e for e, _ in used) == {0: 20, 1: 20, 2: 20}
    for epoch in range(3):
        assert sorted(i for e, i in used if e == epoch) == list(range(20))
    orders = [[i for e, i in used if e == epoch] for epoch in range(2)]
    assert orders[0] != orders[1], "each epoch has its own order"


def test_resume_continues_at_the_next_sample():
    straight, _ = consume(world=1, steps=12, size=10, bs=2)
    head, state = consume(world=1, steps=7, size=10, bs=2)
    tail, _ = consume(world=1, steps=5, size=10, bs=2, state=state)
    assert head + tail == straight


@pytest.mark.parametrize("before, after", [(2, 3), (3, 1), (1, 4)])
def test_a_changed_number_of_processes_neither_repeats_nor_skips(before, after):
    # 7 global batches of 3 x `before`, then the rest of three epochs on `after` ranks
    head, state = consume(world=before, steps=7, size=60)
    steps = (180 - len(head)) // (3 * after)
    tail, _ = consume(world=after, steps=steps, size=60, state=state)
    used = head + tail
    assert len(used) == len(set(used)), "a sample was used twice"
    complete = [e for e, n in Counter(e for e, _ in used).items() if n == 60]
    assert complete[:2] == [0, 1], "an epoch lost samples across the change"


def test_other_data_and_old_positions_are_refused():
    state = ResumableBatchSampler(10, 2, 1, 0).state_dict()
    with pytest.raises(PositionError, match="replay or skip"):
        ResumableBatchSampler(12, 2, 2, 0).load_state_dict(state)
    with pytest.raises(PositionError, match="older asymvae"):
        ResumableBatchSampler(10, 2, 1, 0).load_state_dict({"epoch": 0, "consumed": 4, "size": 10, "global_batch": 2})


def test_too_little_data_is_a_clear_error():
    with pytest.raises(ValueError, match="fewer than one global batch"):
        ResumableBatchSampler(3, 2, 2, 0)
