"""The streaming reader of prepared shards: exact epochs, exact resume, and training from a local manifest."""

from __future__ import annotations

import itertools
import shutil

import pytest
import torch
from torch.utils.data import DataLoader

from asymvae.data.config import DataConfig
from asymvae.data.manifest import load_manifest
from asymvae.data.prepare import PrepareConfig, prepare
from asymvae.data.sampler import PositionError
from asymvae.data.streaming import ShardStream
from asymvae.masks import MaskConfig
from asymvae.training.state_files import STATE_NAME, read_state
from asymvae.training.trainer import Trainer
from tests.support.tiny_models import tiny_config, weights

SOURCE = "builtin:demo?count=64&size=48"


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """A local prepared dataset with several small train shards, and one with a single train shard."""
    root = tmp_path_factory.mktemp("shards")
    cfg = PrepareConfig(max_side=48, min_side=16, val_fraction=0.1, shard_max_bytes=65536, workers=1)
    many = prepare(SOURCE, str(root / "many"), cfg, progress=False)
    cfg.shard_max_bytes = 64 << 20
    one = prepare(SOURCE, str(root / "one"), cfg, progress=False)
    assert len(many.manifest.shards_of("train")) >= 4 and len(one.manifest.shards_of("train")) == 1
    return {"many": str(root / "many"), "one": str(root / "one")}


def _stream(uri: str, workers: int = 2, world: int = 1, rank: int = 0, buffer: int = 4) -> ShardStream:
    manifest, store = load_manifest(uri)
    data = DataConfig(resolution=32, num_workers=workers, shuffle_buffer=buffer)
    return ShardStream(manifest, store, data, MaskConfig(), seed=3, rank=rank, world_size=world)


def _epoch_samples(stream: ShardStream, slot: int, epoch: int) -> list[dict]:
    """Everything `slot` reads of `epoch` under its current plan, from its saved position on."""
    left = len(stream.position.plan.chunk(epoch, slot)) - stream.position.slots.get(slot, (epoch, 0))[1]
    return list(itertools.islice(stream.slot_stream(slot), left))


@pytest.mark.parametrize("kind", ["many", "one"])
def test_each_epoch_reads_every_train_sample_exactly_once(shards, kind):
    world, workers = 2, 2
    streams = [_stream(shards[kind], workers, world, rank) for rank in range(world)]
    size = streams[0].size
    for epoch in (0, 1):
        seen = []
        for rank, stream in enumerate(streams):
            for w in range(workers):
                slot = rank * workers + w
                stream.position.slots[slot] = (epoch, 0)
                samples = _epoch_samples(stream, slot, epoch)
                assert {s["epoch"] for s in samples} == {epoch} and [s["pos"] for s in samples] == list(
                    range(len(samples))
                )
                seen += [s["index"] for s in samples]
        assert sorted(seen) == list(range(size))


def _batches(stream: ShardStream, n: int, advance: bool = False) -> list[dict]:
    loader = DataLoader(stream, batch_size=3, num_workers=stream.data.num_workers)
    out = []
    for batch in itertools.islice(loader, n):
        out.append(batch)
        if advance:
            stream.position.advance(batch)
    return out


@pytest.mark.parametrize("kind", ["many", "one"])
def test_resumed_stream_continues_exactly_where_training_stopped(shards, kind):
    # 2 workers x 22 batches of 3 cross shuffle blocks (4) and the epoch boundary (~29 samples per slot).
    straight = _batches(_stream(shards[kind]), 22)
    first = _stream(shards[kind])
    head = _batches(first, 13, advance=True)
    state = first.position.state_dict()
    second = _stream(shards[kind])
    second.position.load_state_dict(state)
    tail = _batches(second, 9)
    assert max(b["epoch"].max() for b in straight) == 1, "the test should cross an epoch boundary"
    for a, b in zip(straight, head + tail, strict=True):
        assert a["index"].tolist() == b["index"].tolist() and a["slot"].tolist() == b["slot"].tolist()
        assert torch.equal(a["pixels"], b["pixels"]) and torch.equal(a["mask"], b["mask"])


@pytest.mark.parametrize(
    "before, after", [((1, 2), (2, 1)), ((2, 1), (1, 3)), ((1, 1), (3, 2))], ids=["1x2-2x1", "2x1-1x3", "1x1-3x2"]
)
def test_a_changed_number_of_processes_or_workers_neither_repeats_nor_skips(shards, before, after):
    """(processes, workers) before and after a resume: the samples of the first two epochs are each read
    exactly once, whatever was consumed before the change (batches prefetched but not trained on included)."""
    first = [_stream(shards["many"], before[1], before[0], rank) for rank in range(before[0])]
    consumed = []
    for stream in first:  # each rank trains on 5 batches of 3 while its loader prefetches more
        consumed += [i for b in _batches(stream, 5, advance=True) for i in b["index"].tolist()]
    state = first[0].position.state_dict()
    for other in first[1:]:  # every rank's position, as the gathered checkpoint holds them
        other_state = other.position.state_dict()
        state["progress"].update(other_state["progress"])
        state["batches"].update(other_state["batches"])
    size = first[0].size
    seen = {0: consumed, 1: []}
    for rank in range(after[0]):
        stream = _stream(shards["many"], after[1], after[0], rank)
        stream.position.load_state_dict(state)
        assert stream.position.plan.slots == after[0] * after[1] and stream.position.plan.start == 0
        for w in range(after[1]):
            slot = rank * after[1] + w
            for epoch in (0, 1):
                seen[epoch] += [s["index"] for s in _epoch_samples(stream, slot, epoch)]
                stream.position.slots[slot] = (epoch + 1, 0)
    for epoch in (0, 1):
        assert sorted(seen[epoch]) == list(range(size)), f"epoch {epoch}: a sample was repeated or skipped"


def test_position_of_another_dataset_or_seed_is_refused(shards):
    state = _stream(shards["many"]).position.state_dict()
    with pytest.raises(PositionError, match="same data.shards manifest"):
        _stream(shards["one"]).position.load_state_dict(state)


def test_training_from_shards_resumes_to_the_same_weights(base_vae_dir, tmp_path, shards):
    extra = (f"data.shards={shards['many']}", "data.num_workers=2", "data.shuffle_buffer=5")
    straight = tmp_path / "straight"
    Trainer(tiny_config(base_vae_dir, straight, *extra), pretrained=str(base_vae_dir)).fit()
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(straight / "checkpoints" / "step-00000002", resumed / "checkpoints" / "step-00000002")
    trainer = Trainer(tiny_config(base_vae_dir, resumed, *extra), pretrained=str(base_vae_dir))
    assert trainer.resume() == 2 and trainer.sampler.slots  # the stream position came back
    trainer.fit()
    expected, got = weights(straight / "step4"), weights(resumed / "step4")
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


@pytest.mark.slow  # a 2-process torchrun: ~35 s on a busy 2-core machine
def test_two_ranks_stream_disjoint_samples_and_checkpoint_both_positions(base_vae_dir, tmp_path, shards):
    from tests.test_end_to_end import train_on_two_ranks

    out = tmp_path / "ddp"
    cfg = tiny_config(base_vae_dir, out, f"data.shards={shards['many']}", "data.num_workers=1")
    _, seen = train_on_two_ranks(cfg, tmp_path / "ddp.yaml")
    assert sorted(seen[0]) == sorted(seen[1]) == [0, 1, 2, 3]
    used = [i for rank in seen.values() for images in rank.values() for i in images]
    assert len(used) == len(set(used)) == 16, "a sample was used twice within the first epoch"
    position = read_state(out / "checkpoints" / "step-00000004", STATE_NAME)["sampler"]
    assert position["progress"] == {"0": [0, 8], "1": [0, 8]} and position["batches"] == {"0": 4, "1": 4}


@pytest.mark.slow  # one process, then two under torchrun: ~2 min on a busy 2-core machine
def test_a_run_resumed_on_more_processes_with_fewer_workers_reads_each_sample_once(base_vae_dir, tmp_path):
    """An elastic restart for real: 1 process x 3 DataLoader workers trains 4 steps, then the run resumes as
    2 processes x 1 worker (2 readers instead of 3) to the end of the epoch. Every sample of the epoch is
    used exactly once across the change, though the first run's workers had read ahead."""
    import re

    from asymvae.config import save_yaml
    from tests.test_end_to_end import asymvae

    data = tmp_path / "data"
    prepare(
        "builtin:demo?count=40&size=48",
        str(data),
        PrepareConfig(min_side=16, max_side=48, val_fraction=0.0, shard_max_bytes=65536, workers=1),
        progress=False,
    )
    out, cfg_file = tmp_path / "run", tmp_path / "run.yaml"
    extra = (f"data.shards={data}", "data.shuffle_buffer=5", "train.checkpoint_every=4", "train.log_every=4")
    save_yaml(tiny_config(base_vae_dir, out, *extra, "data.num_workers=3"), cfg_file)
    first = asymvae("train", str(cfg_file), env={"ASYMVAE_LOG_LEVEL": "DEBUG"}, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    save_yaml(tiny_config(base_vae_dir, out, *extra, "data.num_workers=1", "train.max_steps=12"), cfg_file)
    second = asymvae(
        "train", str(cfg_file), "--resume", env={"NPROC_PER_NODE": "2", "ASYMVAE_LOG_LEVEL": "DEBUG"}, timeout=600
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert "dealt to the new readers" in second.stderr

    pattern = r"rank (\d) step (\d+) images \[([\d, ]+)\] epochs \[([\d, ]+)\]"
    used = []
    for run, steps in ((first, range(4)), (second, range(4, 12))):
        found = re.findall(pattern, run.stderr)
        assert sorted({int(step) for _, step, _, _ in found}) == list(steps)
        for _, _, images, epochs in found:
            used += [(int(e), int(i)) for i, e in zip(images.split(","), epochs.split(","), strict=True)]
    assert sorted(used) == [(0, i) for i in range(40)], "a sample was repeated or skipped across the restart"
