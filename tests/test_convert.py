"""convert_to_safetensors: real checkpoints round-trip; malicious ones are refused and nothing is written."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file as load_numpy
from safetensors.torch import load_file

from bastion.convert import ConversionError, ConversionResult, convert_to_safetensors
from bastion.errors import UsageError
from bastion.safeload import UnsafeFileError, UnsafeGlobalError


class Payload:
    """Pickles as a call to os.system; only ever handed to the converter, which must refuse it."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo bastion-test",))


def test_state_dict_round_trip(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    state = model.state_dict()
    torch.save(state, tmp_path / "model.pt")
    result = convert_to_safetensors(tmp_path / "model.pt", tmp_path / "model.safetensors")
    assert isinstance(result, ConversionResult)
    assert result.tensors == len(state)
    assert result.total_bytes == sum(t.numel() * t.element_size() for t in state.values())
    loaded = load_file(str(tmp_path / "model.safetensors"))
    assert set(loaded) == set(state)
    for name, tensor in state.items():
        assert torch.equal(loaded[name], tensor)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "model.safetensors"]


def test_nested_checkpoint_is_flattened_and_tied_weights_cloned(tmp_path: Path) -> None:
    emb = torch.randn(5, 2)
    checkpoint = {
        "model": {
            "embed.weight": emb,
            "lm_head.weight": emb,
            "block": {"w": torch.arange(6.0).reshape(2, 3)[:, :2]},
        },
        "epoch": 3,
        "optimizer": {"lr": 0.1},
    }
    torch.save(checkpoint, tmp_path / "ckpt.pt")
    result = convert_to_safetensors(tmp_path / "ckpt.pt", tmp_path / "out.safetensors")
    assert result.skipped == ("epoch", "optimizer")
    assert result.cloned == ("embed.weight", "lm_head.weight")
    loaded = load_file(str(tmp_path / "out.safetensors"))
    assert set(loaded) == {"embed.weight", "lm_head.weight", "block.w"}
    assert torch.equal(loaded["block.w"], torch.tensor([[0.0, 1.0], [3.0, 4.0]]))


def test_pickled_numpy_dict(tmp_path: Path) -> None:
    (tmp_path / "w.pkl").write_bytes(
        pickle.dumps({"a": np.ones(3), "b": {"c": np.zeros((2, 2), np.float16)}})
    )
    result = convert_to_safetensors(tmp_path / "w.pkl", tmp_path / "w.safetensors")
    assert result.tensors == 2
    loaded = load_numpy(str(tmp_path / "w.safetensors"))
    assert loaded["b.c"].dtype == np.float16


def test_malicious_checkpoint_is_refused_and_nothing_written(tmp_path: Path) -> None:
    torch.save({"weight": torch.ones(2), "hook": Payload()}, tmp_path / "evil.pt")
    with pytest.raises((UnsafeFileError, UnsafeGlobalError)):
        convert_to_safetensors(tmp_path / "evil.pt", tmp_path / "evil.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.pt"]


def test_refuses_overwrite_and_non_tensor_content(tmp_path: Path) -> None:
    torch.save({"w": torch.ones(1)}, tmp_path / "m.pt")
    (tmp_path / "exists.safetensors").write_bytes(b"keep")
    with pytest.raises(UsageError, match="overwrite"):
        convert_to_safetensors(tmp_path / "m.pt", tmp_path / "exists.safetensors")
    assert (tmp_path / "exists.safetensors").read_bytes() == b"keep"
    convert_to_safetensors(tmp_path / "m.pt", tmp_path / "exists.safetensors", overwrite=True)
    assert set(load_file(str(tmp_path / "exists.safetensors"))) == {"w"}
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ConversionError, match="not a dict of tensors"):
        convert_to_safetensors(tmp_path / "list.pkl", tmp_path / "list.safetensors")
    (tmp_path / "meta.pkl").write_bytes(pickle.dumps({"epoch": 1}))
    with pytest.raises(ConversionError, match="no tensors"):
        convert_to_safetensors(tmp_path / "meta.pkl", tmp_path / "meta.safetensors")
    assert not (tmp_path / "list.safetensors").exists()
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
