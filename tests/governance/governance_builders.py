"""Models and datasets built in tmp_path for the governance tests (nothing is downloaded or loaded)."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file


def make_model(root: Path, seed: int = 0) -> Path:
    """A small Hugging-Face-style directory: safetensors weights and a config."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    save_file(
        {"dense.weight": rng.standard_normal((16, 8)).astype(np.float32)}, str(root / "model.safetensors")
    )
    (root / "config.json").write_text(json.dumps({"architectures": ["TinyNet"], "hidden_size": 16}), "utf-8")
    return root


class _Exploit:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo owned",))


def make_malicious(root: Path) -> Path:
    """A pickle that would run a shell command if loaded (it never is: the scanner reads opcodes)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.pkl").write_bytes(pickle.dumps(_Exploit()))
    return root


def make_dataset(root: Path, sign_key: Path | None = None) -> tuple[Path, Path]:
    """A CSV and its `bastion data fingerprint` manifest (signed when a key is given)."""
    from bastion.cli.main import main

    root.mkdir(parents=True, exist_ok=True)
    data = root / "train.csv"
    data.write_text("x,y,label\n" + "".join(f"{i},{i * 2},{i % 2}\n" for i in range(40)), "utf-8")
    manifest = root / "train.manifest.json"
    args = ["data", "fingerprint", str(data), "--source", "unit-test feed", "--output", str(manifest)]
    if sign_key is not None:
        args += ["--sign-key", str(sign_key)]
    assert main(args) == 0
    return data, manifest
