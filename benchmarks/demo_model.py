"""Build the `make demo` model: an MLP trained on the sanitized digits, saved as safetensors, and its policy.

Writes ``MODEL_DIR/model.safetensors`` (the weights), ``MODEL_DIR/config.json`` and, with ``--policy``, a
copy of ``examples/policy.yaml`` whose allowed signer is the demo's release key, so the gate can pass.
With ``--tamper MODEL_DIR`` it flips one bit of the weights instead, as an attacker would.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors.numpy import save_file
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_SIGNER = "sha256:5b1c3a0c2d6f4e8a9b7c1d2e3f405162738495a6b7c8d9e0f1a2b3c4d5e6f708"


def train(data: Path, out: Path, seed: int = 0) -> float:
    """Fit the MLP on the sanitized CSV and write its weights; return the training accuracy."""
    frame = pd.read_csv(data)
    y = frame.pop("label").to_numpy()
    x = frame.drop(columns=["source"], errors="ignore").to_numpy(dtype=np.float32) / 16.0
    with warnings.catch_warnings():  # a demo-sized fit; a few more epochs would change nothing shown
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = MLPClassifier(hidden_layer_sizes=(64,), max_iter=300, random_state=seed).fit(x, y)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {f"layer{i}.weight": w.astype(np.float32) for i, w in enumerate(model.coefs_)}
    tensors.update({f"layer{i}.bias": b.astype(np.float32) for i, b in enumerate(model.intercepts_)})
    save_file(tensors, str(out / "model.safetensors"))
    config = {"architecture": "mlp", "hidden_layer_sizes": [64], "classes": [int(c) for c in model.classes_]}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return float(model.score(x, y))


def write_policy(public_key: Path, out: Path) -> str:
    """The example policy with the demo's release key as the allowed signer."""
    from bastion.registry.signing import key_fingerprint

    fingerprint = key_fingerprint(public_key)
    text = (ROOT / "examples" / "policy.yaml").read_text(encoding="utf-8")
    out.write_text(text.replace(EXAMPLE_SIGNER, fingerprint), encoding="utf-8")
    return fingerprint


def tamper(model_dir: Path) -> None:
    """Flip the lowest bit of the last byte of the weights."""
    weights = model_dir / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0x01
    weights.write_bytes(bytes(raw))


def main() -> None:
    """Train (or tamper) and optionally write the policy."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--data", type=Path, help="the sanitized training CSV")
    parser.add_argument("--public-key", type=Path, help="the release key's public half (for --policy)")
    parser.add_argument("--policy", type=Path, help="write the demo policy here")
    parser.add_argument("--tamper", action="store_true", help="flip one bit of the weights")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    args = parser.parse_args()
    if args.tamper:
        tamper(args.model_dir)
        print(f"tampered with {args.model_dir / 'model.safetensors'} (one bit flipped)")
        return
    if args.data is not None:
        accuracy = train(args.data, args.model_dir, args.seed)
        print(
            f"trained an MLP on {args.data.name}: training accuracy {accuracy:.3f}; "
            f"weights in {args.model_dir}"
        )
    if args.policy is not None and args.public_key is not None:
        signer = write_policy(args.public_key, args.policy)
        print(f"wrote {args.policy}: the allowed signer is the release key {signer}")


if __name__ == "__main__":
    main()
