"""Training state as JSON and safetensors: every kind of value a state dict holds comes back as it went in."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from asymvae.training.state_files import read_state, write_state


def test_every_kind_of_value_round_trips_without_pickle(tmp_path):
    state = {
        "weights": torch.arange(6.0).reshape(2, 3),
        "bits": np.packbits(np.array([True, False, True])).tobytes(),  # the stream plan's consumed samples
        "array": np.array([1, 2], dtype=np.int64),
        "by_rank": {0: 4, 1: (2, "x")},
        "nested": [None, True, 1.5, "s"],
    }
    write_state(tmp_path, "s", state)
    back = read_state(tmp_path, "s")
    assert torch.equal(back["weights"], state["weights"])
    assert back["bits"] == state["bits"] and isinstance(back["bits"], bytes)
    assert back["array"].dtype == np.int64 and back["array"].tolist() == [1, 2]
    assert back["by_rank"] == {0: 4, 1: (2, "x")} and back["nested"] == state["nested"]
    json.loads((tmp_path / "s.json").read_text())  # plain JSON, nothing else


def test_a_value_json_cannot_hold_is_named(tmp_path):
    with pytest.raises(TypeError, match=r"s\.obj: a object cannot be checkpointed"):
        write_state(tmp_path, "s", {"obj": object()})
