"""Ctrl-C stops work at once and quietly: pools whose workers ignore it, MLP fits that do not eat it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from bastion.data import validate
from bastion.data.audit import representation
from bastion.workers import process_pool, stop_pool


def _sigint_handler() -> object:
    return signal.getsignal(signal.SIGINT)


def test_pool_workers_ignore_sigint() -> None:
    pool = process_pool(1)
    try:
        assert pool.submit(_sigint_handler).result(timeout=60) == signal.SIG_IGN
    finally:
        stop_pool(pool, interrupted=False)


# A parent that interrupts its own process group (as a terminal's Ctrl-C does) while a worker is busy.
_INTERRUPTED_PARENT = textwrap.dedent(
    """
    import multiprocessing, os, signal, time
    from bastion.workers import process_pool, stop_pool

    def busy(seconds):
        time.sleep(seconds)
        return seconds

    if __name__ == "__main__":
        pool = process_pool(2, multiprocessing.get_context("spawn"))
        # Two overlapping tasks start both workers (spawned workers start on demand).
        for started in [pool.submit(busy, 1), pool.submit(busy, 0)]:
            started.result()
        # One worker busy, the other idle on the task queue: the two places an interrupt used to land.
        running = pool.submit(busy, 600)
        time.sleep(0.5)
        interrupted = False
        try:
            os.killpg(0, signal.SIGINT)
            running.result()
        except KeyboardInterrupt:
            interrupted = True
        finally:
            stop_pool(pool, interrupted)
        print("interrupted" if interrupted else "finished", running.done())
    """
)


def test_interrupt_ends_busy_workers_without_their_tracebacks(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(_INTERRUPTED_PARENT)
    # Its own session, so the SIGINT to the group reaches the script and its workers but not pytest.
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert done.returncode == 0, done.stderr
    # The busy task was not waited for (it sleeps 600 s and the run has a 300 s timeout): it was ended.
    assert done.stdout.split() == ["interrupted", "True"]
    assert "Traceback" not in done.stderr
    assert "KeyboardInterrupt" not in done.stderr


def _interrupt_mid_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    from sklearn.neural_network import MLPClassifier

    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    # Called after every epoch inside the fit's own `except KeyboardInterrupt` block.
    monkeypatch.setattr(MLPClassifier, "_update_no_improvement_count", interrupt)


def test_mlp_fit_passes_ctrl_c_on(monkeypatch: pytest.MonkeyPatch) -> None:
    _interrupt_mid_fit(monkeypatch)
    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, 3))
    labels = (features[:, 0] > 0).astype(np.int64)
    # scikit-learn alone would warn and return the half-trained network to the backdoor channel.
    with pytest.raises(KeyboardInterrupt):
        representation.train_mlp(features, labels, seed=0)
    # The validation recipe would otherwise report a half-trained model's accuracy as the verdict.
    with pytest.raises(KeyboardInterrupt):
        validate._fit("mlp", 0, features, labels)


def test_other_user_warnings_still_pass_through() -> None:
    with pytest.warns(UserWarning, match="something else"), representation.interrupts_not_swallowed():
        warnings.warn("something else", UserWarning, stacklevel=1)
