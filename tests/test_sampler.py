"""The distributed, resumable sampler: disjoint ranks, whole epochs, exact continuation."""

from __future__ import annotations

import itertools

import pytest

from asymvae.data.sampler import ResumableBatchSampler


def take(sampler: ResumableBatchSampler, n: int) -> list[list[tuple[int, int]]]:
    out = []
    for batch in itertools.islice(iter(sampler), n):
        out.append(batch)
    return out


def test_ranks_are_disjoint_and_cover_the_epoch():
    size, bs, world = 20, 3, 2  # 6 per global batch -> 3 batches, 2 images dropped per epoch
    ranks = [ResumableBatchSampler(size, bs, world, r, seed=1) for r in range(world)]
    per_rank = [take(s, 3) for s in ranks]
    seen = [i for batches in per_rank for b in batches for (_, i) in b]
    assert len(seen) == len(set(seen)) == 18
    assert {e for batches in per_rank for b in batches for (e, _) in b} == {0}
    # the 4th batch starts epoch 1 with a different order
    nxt = take(ranks[0], 4)[3]
    assert {e for e, _ in nxt} == {1}


def test_resume_continues_at_the_next_global_batch():
    a = ResumableBatchSampler(10, 2, 1, 0, seed=3)
    straight = take(a, 12)  # crosses two epoch boundaries (5 batches per epoch)
    b = ResumableBatchSampler(10, 2, 1, 0, seed=3)
    for _ in range(7):
        b.advance()
    c = ResumableBatchSampler(10, 2, 1, 0, seed=3)
    c.load_state_dict(b.state_dict())
    assert c.epoch == 1 and c.consumed == 4
    assert take(c, 5) == straight[7:12]


def test_mismatched_geometry_is_refused():
    state = ResumableBatchSampler(10, 2, 1, 0).state_dict()
    with pytest.raises(ValueError, match="replay or skip"):
        ResumableBatchSampler(10, 2, 2, 0).load_state_dict(state)


def test_too_little_data_is_a_clear_error():
    with pytest.raises(ValueError, match="fewer than one global batch"):
        ResumableBatchSampler(3, 2, 2, 0)
