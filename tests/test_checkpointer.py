"""The Checkpointer on a small model: what it saves, which checkpoint it resumes from, what it skips and refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from torch import nn

from asymvae.training.checkpoint import MARKER, CheckpointError, complete_checkpoints
from asymvae.training.checkpointer import Checkpointer
from asymvae.training.state_files import STATE_NAME


class Counter:
    """The step, as the trainer's TrainState keeps it."""

    def __init__(self) -> None:
        self.step = 0

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])


class Run:
    """A linear model, its optimiser and a step counter, checkpointed into `out`."""

    def __init__(self, out: Path, keep: int = 3) -> None:
        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()
        acc = Accelerator(cpu=True)
        self.model = nn.Linear(3, 2)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=0.1)
        self.counter = Counter()
        self.checkpoints = Checkpointer(
            acc, out, "model: {}\n", self.stateful, lambda: self.counter.step, images_per_step=4, keep=keep
        )

    def stateful(self) -> tuple[list[nn.Module], dict[str, Any]]:
        return [self.model], {"optimizer": self.optimizer, STATE_NAME: self.counter}

    def train_to(self, step: int) -> None:
        while self.counter.step < step:
            self.model(torch.ones(1, 3)).sum().backward()
            self.optimizer.step()
            self.optimizer.zero_grad()
            self.counter.step += 1


def _saved(out: Path, steps: list[int], keep: int = 3) -> dict[int, torch.Tensor]:
    """Save checkpoints at `steps`; returns the weights at each."""
    run, weights = Run(out, keep), {}
    for step in steps:
        run.train_to(step)
        run.checkpoints.save()
        weights[step] = run.model.weight.detach().clone()
    return weights


def test_save_writes_a_complete_checkpoint_and_keeps_the_newest(tmp_path):
    _saved(tmp_path, [1, 2, 3, 4], keep=2)
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step-00000003", "step-00000004"]
    assert '"images": 16' in (tmp_path / "checkpoints" / "step-00000004" / MARKER).read_text()


def test_resume_takes_the_newest_complete_checkpoint_not_an_unfinished_one(tmp_path):
    weights = _saved(tmp_path, [1, 2])
    unfinished = tmp_path / "checkpoints" / "step-00000009"  # a save killed before its marker
    unfinished.mkdir()
    (unfinished / "model.safetensors").write_bytes(b"half")
    run = Run(tmp_path)
    assert run.checkpoints.resume() == 2 and run.counter.step == 2
    assert torch.equal(run.model.weight, weights[2])
    assert run.checkpoints.latest() == tmp_path / "checkpoints" / "step-00000002"


def test_resume_falls_back_past_a_damaged_checkpoint(tmp_path, caplog):
    weights = _saved(tmp_path, [1, 2])
    damaged = tmp_path / "checkpoints" / "step-00000002" / "model.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:10])
    run = Run(tmp_path)
    with caplog.at_level("WARNING"):
        assert run.checkpoints.resume() == 1
    assert torch.equal(run.model.weight, weights[1])
    assert "step-00000002 is damaged: model.safetensors is 10 bytes" in caplog.text
    assert "skipped step-00000002" in caplog.text
    # named explicitly, the damaged one is refused, not replaced by another
    with pytest.raises(CheckpointError, match=r"step-00000002 is damaged: .* Fix: resume with --resume"):
        Run(tmp_path).checkpoints.resume(damaged.parent)


def test_resume_without_any_intact_checkpoint_says_so(tmp_path):
    assert Run(tmp_path).checkpoints.resume() == 0  # none at all: a fresh start
    _saved(tmp_path, [1])
    (tmp_path / "checkpoints" / "step-00000001" / "optimizer.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"no checkpoint in .* is intact \(step-00000001: optimizer.json"):
        Run(tmp_path).checkpoints.resume()
