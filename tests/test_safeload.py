"""safe_load: benign files load; anything off the allowlist is refused before it can run."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from bastion.errors import BastionError, InputError, UsageError
from bastion.safeload import (
    UnsafeFileError,
    UnsafeGlobalError,
    UnsupportedFormatError,
    describe,
    restricted_loads,
    safe_load,
    safe_loads,
)


class Payload:
    """Pickles as a call to os.system; never loaded by these tests except through safe_load."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo bastion-test",))


class Unknown:
    """A class from this test module: not on any allowlist, but not known-dangerous either."""

    def __init__(self) -> None:
        self.x = 1


def test_torch_state_dict_loads(tmp_path: Path) -> None:
    state = {"layer.weight": torch.randn(3, 4), "layer.bias": torch.zeros(3)}
    torch.save(state, tmp_path / "m.pt")
    loaded = safe_load(tmp_path / "m.pt")
    assert set(loaded) == set(state)
    assert torch.equal(loaded["layer.weight"], state["layer.weight"])
    torch.save(state, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    assert torch.equal(safe_load(tmp_path / "legacy.pt")["layer.bias"], state["layer.bias"])


def test_plain_pickle_numpy_and_joblib_load(tmp_path: Path) -> None:
    obj = {"x": np.arange(5), "meta": [1, 2.5, "name"], "nested": {"t": (1, 2)}}
    (tmp_path / "p.pkl").write_bytes(pickle.dumps(obj, protocol=4))
    loaded = safe_load(tmp_path / "p.pkl")
    assert loaded["meta"] == [1, 2.5, "name"]
    assert np.array_equal(loaded["x"], obj["x"])
    joblib.dump({"w": np.ones((2, 2))}, tmp_path / "j.joblib")
    assert np.array_equal(safe_load(tmp_path / "j.joblib")["w"], np.ones((2, 2)))
    joblib.dump({"w": np.ones(3)}, tmp_path / "jz.joblib", compress=3)
    assert np.array_equal(safe_load(tmp_path / "jz.joblib")["w"], np.ones(3))
    np.save(tmp_path / "a.npy", np.arange(4))
    assert np.array_equal(safe_load(tmp_path / "a.npy"), np.arange(4))
    np.savez(tmp_path / "a.npz", x=np.arange(3))
    assert np.array_equal(safe_load(tmp_path / "a.npz")["x"], np.arange(3))
    save_file({"t": np.ones(2, np.float32)}, str(tmp_path / "s.safetensors"))
    assert np.array_equal(safe_load(tmp_path / "s.safetensors")["t"], np.ones(2, np.float32))


def test_dangerous_pickle_is_refused_by_the_scan_gate(tmp_path: Path) -> None:
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(Payload(), protocol=2))
    with pytest.raises(UnsafeFileError) as info:
        safe_load(path)
    assert info.value.findings[0].severity >= info.value.threshold
    assert "bastion scan" in info.value.diagnostics()


def test_dangerous_pickle_is_refused_by_the_unpickler_without_scan(tmp_path: Path) -> None:
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(Payload(), protocol=0))
    with pytest.raises(UnsafeGlobalError) as info:
        safe_load(path, scan=False)
    assert info.value.name == "system"
    assert "posix.system" in str(info.value) or "os.system" in str(info.value)


def test_unknown_global_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "unknown.pkl"
    path.write_bytes(pickle.dumps(Unknown()))
    with pytest.raises(UnsafeGlobalError) as info:
        safe_load(path)
    assert info.value.module == __name__
    assert info.value.name == "Unknown"


def test_malicious_torch_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.ones(2), "hook": Payload()}, path)
    with pytest.raises((UnsafeFileError, UnsafeGlobalError)):
        safe_load(path)
    with pytest.raises(UnsafeGlobalError):
        safe_load(path, scan=False)  # the dry run alone refuses os.system


def test_persistent_ids_are_refused_in_raw_pickles() -> None:
    class WithPid(pickle.Pickler):
        def persistent_id(self, obj: object) -> str | None:
            return "storage" if obj == "x" else None

    import io

    buf = io.BytesIO()
    WithPid(buf, protocol=2).dump(["x"])
    with pytest.raises(InputError, match="persistent"):
        restricted_loads(buf.getvalue())


def test_safe_loads_bytes_and_profiles() -> None:
    data = pickle.dumps({"a": np.float32(1.5)})
    assert safe_loads(data)["a"] == np.float32(1.5)
    with pytest.raises(UnsafeGlobalError):
        safe_loads(data, profile="python")  # numpy scalars are outside the python profile
    with pytest.raises(UsageError):
        safe_loads(data, profile="no-such-profile")
    assert safe_loads(data, profile="numpy")["a"] == np.float32(1.5)  # the python containers come along


def test_unsupported_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UnsupportedFormatError, match="supported"):
        safe_load(tmp_path / "notes.txt")
    with pytest.raises(InputError):
        safe_load(tmp_path / "missing.pkl")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(BastionError):
        safe_load(tmp_path / "obj.npy")


def test_describe_summarises_tensors_and_keys() -> None:
    text = describe({"w": torch.zeros(2, 3), "b": np.zeros(4, np.float16), "step": 7})
    assert text.splitlines() == [
        "dict with 3 keys",
        "  w: tensor torch.float32 (2, 3)",
        "  b: ndarray float16 (4,)",
        "  step: 7",
    ]
    long = describe(list(range(100)))
    assert long.splitlines()[0] == "list of 100 items"
    assert long.splitlines()[-1] == "  ... and 60 more"
