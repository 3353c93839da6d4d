"""The curated import policy: exact allow, prefix deny, dunders and traversal, and measured profiles."""

from __future__ import annotations

import io
import pickle
import zipfile

import numpy as np
import pytest

from bastion.scan.globals_policy import (
    POLICY_VERSION,
    PROFILES,
    ImportRating,
    ImportVerdict,
    is_traversal,
    rate_import,
    safe_globals,
)
from bastion.scan.pickle_vm import analyse_pickle


def test_version_and_profiles() -> None:
    assert POLICY_VERSION
    assert set(PROFILES) >= {"python", "numpy", "torch", "sklearn", "joblib"}
    assert safe_globals(["torch"]) < safe_globals()
    with pytest.raises(ValueError, match="unknown import profile"):
        safe_globals(["nope"])


def test_allowlist_has_no_dunders_dots_or_denied_names() -> None:
    for module, name in safe_globals():
        assert "." not in name, (module, name)
        assert not (name.startswith("__") and name.endswith("__")), (module, name)
        assert rate_import(module, name).verdict is ImportVerdict.SAFE


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch", "FloatStorage"),
        ("torch", "float32"),
        ("torch", "Size"),
        ("collections", "OrderedDict"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy._core.multiarray", "scalar"),
        ("builtins", "set"),
        ("__builtin__", "frozenset"),
        ("copy_reg", "_reconstructor"),
        ("_codecs", "encode"),
        ("joblib.numpy_pickle", "NumpyArrayWrapper"),
        ("sklearn.tree._tree", "Tree"),
    ],
)
def test_safe(module: str, name: str) -> None:
    rating = rate_import(module, name)
    assert rating.verdict is ImportVerdict.SAFE
    assert rating.profile in PROFILES


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("os", "system"),
        ("posix", "system"),
        ("nt", "system"),
        ("builtins", "eval"),
        ("__builtin__", "exec"),
        ("builtins", "getattr"),
        ("asyncio.unix_events", "_UnixSubprocessTransport"),
        ("subprocess", "Popen"),
        ("torch", "hub.load"),
        ("torch.jit._serialization", "load"),
        ("numpy.f2py.crackfortran", "crackfortran"),
        ("numpy", "load"),
        ("pickle", "loads"),
        ("operator", "attrgetter"),
        ("functools", "partial"),
        ("uuid", "_get_command_stdout"),
    ],
)
def test_dangerous(module: str, name: str) -> None:
    rating = rate_import(module, name)
    assert rating == ImportRating(ImportVerdict.DANGEROUS, rating.reason)
    assert rating.reason


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("numpy", "__builtins__"),
        ("argparse", "_os.system"),
        ("collections", "OrderedDict.__init__"),
        ("x", "a.b"),
    ],
)
def test_traversal_is_dangerous(module: str, name: str) -> None:
    assert rate_import(module, name).verdict is ImportVerdict.DANGEROUS
    assert is_traversal(module, name)


def test_listed_dunder_name_is_not_traversal() -> None:
    assert not is_traversal("builtins", "__import__")
    assert rate_import("builtins", "__import__").verdict is ImportVerdict.DANGEROUS


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("mypkg.helpers", "Thing"),
        ("numpy", "size"),
        ("__main__", "Net"),
        ("torch.nn.modules.linear", "Linear"),
    ],
)
def test_unknown(module: str, name: str) -> None:
    assert rate_import(module, name).verdict is ImportVerdict.UNKNOWN


def test_prefix_never_allows() -> None:
    # A safe module does not make its other names or submodules safe.
    assert rate_import("torch._utils", "_rebuild_tensor_v9").verdict is ImportVerdict.UNKNOWN
    assert rate_import("collections.abc", "OrderedDict").verdict is ImportVerdict.UNKNOWN
    assert rate_import("builtins", "set ").verdict is ImportVerdict.UNKNOWN


def _imports(data: bytes) -> set[tuple[str, str]]:
    analysis = analyse_pickle(io.BytesIO(data))
    assert analysis.error is None, analysis.error
    return {(r.module, r.name) for r in analysis.imports}


def test_measured_numpy_and_python_objects_are_safe() -> None:
    import collections

    objects = [
        np.arange(3.0),
        np.float64(1.0),
        np.int32(2),
        np.array(["a"]),
        np.random.RandomState(0),
        np.random.default_rng(1),
        {"s": {1}, "f": frozenset(), "c": 1j, "sl": slice(1), "b": bytearray(b"x")},
        collections.OrderedDict(a=1),
        collections.Counter("ab"),
        collections.deque([1]),
        b"bytes",
    ]
    found: set[tuple[str, str]] = set()
    for obj in objects:
        for proto in range(6):
            found |= _imports(pickle.dumps(obj, protocol=proto))
    unsafe = {pair for pair in found if rate_import(*pair).verdict is not ImportVerdict.SAFE}
    assert unsafe == set()


def test_measured_torch_checkpoint_is_safe() -> None:
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    buf = io.BytesIO()
    torch.save({"m": model.state_dict(), "o": opt.state_dict(), "i8": torch.ones(1, dtype=torch.int8)}, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
        data = zf.read(next(n for n in zf.namelist() if n.endswith("data.pkl")))
    unsafe = {pair for pair in _imports(data) if rate_import(*pair).verdict is not ImportVerdict.SAFE}
    assert unsafe == set()


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("transformers.training_args", "TrainingArguments"),
        ("transformers.trainer_utils", "IntervalStrategy"),
        ("accelerate.utils.dataclasses", "DistributedType"),
    ],
)
def test_training_args_profile(module: str, name: str) -> None:
    """Hugging Face repositories ship training_args.bin; its classes are measured and allowed."""
    rating = rate_import(module, name)
    assert rating.verdict is ImportVerdict.SAFE
    assert rating.profile == "transformers-args"


def test_training_args_profile_allows_nothing_else_in_transformers() -> None:
    assert rate_import("transformers.training_args", "os").verdict is not ImportVerdict.SAFE
    assert rate_import("transformers.trainer_utils", "set_seed").verdict is ImportVerdict.UNKNOWN
