"""``bastion`` flows in-process through ``main(argv)``: output files, rules, baselines, suppressions, config.

Same assertions as a subprocess would make (exit code, stdout, stderr), without paying an interpreter
start per call; tests/test_cli.py covers the real ``python -m bastion`` process.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from bastion.cli.main import main


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo bastion-test",))


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


Runner = Callable[..., Result]


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Runner:
    """Call main() in ``cwd`` with only the given BASTION_* variables set."""
    for key in list(os.environ):
        if key.startswith("BASTION_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("NO_COLOR", "1")

    def _run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Result:
        monkeypatch.chdir(cwd)
        with monkeypatch.context() as m:
            for key, value in (env or {}).items():
                m.setenv(key, value)
            code = main([*args, "--jobs", "1"] if args and args[0] == "scan" else list(args))
        out = capsys.readouterr()
        return Result(code, out.out, out.err)

    return _run


def assert_one_line_error(proc: Result, fragment: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("bastion: error: "), lines[0]
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


@pytest.fixture
def samples(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    models.mkdir()
    (models / "evil.pkl").write_bytes(pickle.dumps(_Payload(), protocol=4))
    (models / "good.pkl").write_bytes(pickle.dumps({"weights": [1.0, 2.0], "name": "benign"}, protocol=4))
    return tmp_path


def test_output_file_is_written_atomically(samples: Path, run: Runner) -> None:
    out = samples / "report.json"
    out.write_text("previous report")
    proc = run("scan", "models", "--format", "json", "--output", str(out), cwd=samples)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert json.loads(out.read_text())["schema_version"] == "1.0"
    assert sorted(p.name for p in samples.iterdir()) == ["models", "report.json"]


def test_markdown_format(samples: Path, run: Runner) -> None:
    proc = run("scan", "models", "--format", "markdown", cwd=samples)
    assert proc.returncode == 1
    assert proc.stdout.startswith("# Bastion scan report")


def test_argparse_errors_are_one_line(tmp_path: Path, run: Runner) -> None:
    assert_one_line_error(run("frobnicate", cwd=tmp_path), "invalid choice")
    assert_one_line_error(run("scan", cwd=tmp_path), "required")
    assert_one_line_error(run("scan", ".", "--jobs", "-3", cwd=tmp_path), "--jobs")


def test_rules_list_and_prefix(tmp_path: Path, run: Runner) -> None:
    proc = run("rules", "list", "--format", "json", cwd=tmp_path)
    assert proc.returncode == 0
    codes = [r["code"] for r in json.loads(proc.stdout)]
    assert "BST-SCAN-001" in codes
    assert codes == sorted(codes)
    scan_only = run("rules", "list", "--prefix", "BST-SCAN", "--format", "json", cwd=tmp_path)
    assert [r["code"] for r in json.loads(scan_only.stdout)] == [
        c for c in codes if c.startswith("BST-SCAN-")
    ]
    table = run("rules", "list", cwd=tmp_path)
    assert table.returncode == 0
    assert "BST-SCAN-001" in table.stdout


def test_rules_explain(tmp_path: Path, run: Runner) -> None:
    proc = run("rules", "explain", "bst-scan-001", cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.startswith("# BST-SCAN-001: incomplete-analysis")
    assert "## Why is this bad?" in proc.stdout


def test_baseline_flow(samples: Path, run: Runner) -> None:
    assert run("scan", "models", "--write-baseline", "baseline.json", cwd=samples).returncode == 0
    assert json.loads((samples / "baseline.json").read_text())["findings"][0]["location"] == "models/evil.pkl"
    assert run("scan", "models", "--baseline", "baseline.json", cwd=samples).returncode == 0
    (samples / "models" / "evil2.pkl").write_bytes((samples / "models" / "evil.pkl").read_bytes())
    again = run("scan", "models", "--baseline", "baseline.json", "--format", "json", cwd=samples)
    assert again.returncode == 1
    doc = json.loads(again.stdout)
    assert {f["location"]["path"] for f in doc["findings"]} == {"models/evil2.pkl"}
    assert doc["suppressed"][0]["suppression"]["reason"] == "in baseline baseline.json"


def test_corrupt_baseline_exits_2(samples: Path, run: Runner) -> None:
    (samples / "baseline.json").write_text("{oops")
    assert_one_line_error(
        run("scan", "models", "--baseline", "baseline.json", cwd=samples), "corrupt baseline"
    )


def test_suppressions_flow(samples: Path, run: Runner) -> None:
    (samples / "ok.toml").write_text(
        '[[suppress]]\nrule = "BST-PKL"\npath = "models/evil.pkl"\n'
        'reason = "test fixture"\nexpires = 2999-12-31\n'
    )
    ok = run("scan", "models", "--suppressions", "ok.toml", "--format", "json", cwd=samples)
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert doc["findings"] == []
    assert doc["suppressed"][0]["suppression"]["reason"].startswith("test fixture")

    (samples / "old.toml").write_text(
        '[[suppress]]\nrule = "BST-PKL"\npath = "models/evil.pkl"\n'
        'reason = "test fixture"\nexpires = 2000-01-01\n'
    )
    old = run("scan", "models", "--suppressions", "old.toml", "--format", "json", cwd=samples)
    assert old.returncode == 1
    assert "expired on 2000-01-01" in old.stderr
    assert any("expired on 2000-01-01" in n for n in json.loads(old.stdout)["notices"])

    (samples / "bare.toml").write_text('[[suppress]]\nrule = "BST-PKL-001"\npath = "models/evil.pkl"\n')
    assert_one_line_error(run("scan", "models", "--suppressions", "bare.toml", cwd=samples), "entry #1")


def test_config_precedence_end_to_end(samples: Path, run: Runner) -> None:
    # The output format shows which layer won: bastion.toml, then BASTION_FORMAT, then --format.
    (samples / "bastion.toml").write_text('[scan]\nformat = "markdown"\n')
    from_file = run("scan", "models/good.pkl", cwd=samples)
    assert from_file.stdout.startswith("# Bastion scan report")
    from_env = run("scan", "models/good.pkl", cwd=samples, env={"BASTION_FORMAT": "json"})
    assert json.loads(from_env.stdout)["schema_version"] == "1.0"
    from_flag = run(
        "scan", "models/good.pkl", "--format", "sarif", cwd=samples, env={"BASTION_FORMAT": "json"}
    )
    assert json.loads(from_flag.stdout)["version"] == "2.1.0"


def test_fail_on_precedence_end_to_end(samples: Path, run: Runner) -> None:
    (samples / "bastion.toml").write_text('fail-on = "critical"\n')
    (samples / "models" / "evil.pkl").unlink()
    (samples / "models" / "mismatch.safetensors").write_bytes(pickle.dumps({"a": 1}))  # medium finding
    assert run("scan", "models", cwd=samples).returncode == 0
    assert run("scan", "models", cwd=samples, env={"BASTION_FAIL_ON": "medium"}).returncode == 1
    env = {"BASTION_FAIL_ON": "medium"}
    assert run("scan", "models", "--fail-on", "high", cwd=samples, env=env).returncode == 0


def test_bad_config_exits_2(samples: Path, run: Runner) -> None:
    (samples / "bastion.toml").write_text('[scan]\nfail-on = "sometimes"\n')
    assert_one_line_error(run("scan", "models", cwd=samples), "bastion.toml: fail_on: unknown severity")
    assert_one_line_error(
        run("scan", "models", "--config", "nope.toml", cwd=samples), "nope.toml: config file not found"
    )


def test_write_baseline_says_so(samples: Path, run: Runner) -> None:
    proc = run("scan", "models", "--write-baseline", "b.json", cwd=samples)
    assert proc.returncode == 0
    assert "bastion: wrote 1 finding(s) to baseline b.json" in proc.stderr


def test_output_into_missing_directory_is_one_line(samples: Path, run: Runner) -> None:
    assert_one_line_error(
        run("scan", "models", "--output", "no/dir/r.json", cwd=samples), "cannot write the report"
    )


def test_unexpected_exception_is_one_line_internal_error(
    samples: Path, run: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bastion.scan

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(bastion.scan, "scan_paths", boom)
    proc = run("scan", "models", cwd=samples)
    assert_one_line_error(proc, "internal error (RuntimeError: kaboom); rerun with --debug")


def test_load_command_prints_description(
    tmp_path: Path, run: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys
    import types

    calls: list[tuple[str, object]] = []
    fake = types.ModuleType("bastion.safeload")
    fake.safe_load = lambda path, profile=None: calls.append((path, profile)) or {"a": 1}  # type: ignore[attr-defined]
    fake.describe = lambda obj: f"dict with {len(obj)} key"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bastion.safeload", fake)
    proc = run("load", "model.pkl", cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (0, "dict with 1 key\n")
    assert calls == [("model.pkl", None)]


def test_convert_command_reports_result(tmp_path: Path, run: Runner, monkeypatch: pytest.MonkeyPatch) -> None:
    import bastion.convert
    from bastion.convert import ConversionResult

    seen: dict[str, object] = {}

    def fake(
        src: Path, dst: Path, *, overwrite: bool = False, profile: str | None = None
    ) -> ConversionResult:
        seen.update(src=src, dst=dst, overwrite=overwrite, profile=profile)
        return ConversionResult(dst, 3, 1024, skipped=("epoch",))

    monkeypatch.setattr(bastion.convert, "convert_to_safetensors", fake)
    proc = run("convert", "in.pt", "out.safetensors", "--overwrite", cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout == "wrote 3 tensors (1024 bytes) to out.safetensors\n"
    assert proc.stderr == "bastion: not tensors, left out: epoch\n"
    assert seen == {"src": Path("in.pt"), "dst": Path("out.safetensors"), "overwrite": True, "profile": None}


def test_colour_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    from bastion.cli.common import wants_color

    class Tty:
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert wants_color(Tty())  # type: ignore[arg-type]
    monkeypatch.setenv("NO_COLOR", "1")
    assert not wants_color(Tty())  # type: ignore[arg-type]


def test_progress_callback_accepts_updates(capsys: pytest.CaptureFixture[str]) -> None:
    from bastion.cli.scan import progress_bar

    with progress_bar(True) as update:
        assert update is not None
        update(1, 2)
        update(2, 2)
    with progress_bar(False) as nothing:
        assert nothing is None


def test_debug_flag_is_accepted_anywhere(samples: Path, run: Runner, monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    # In-process, --debug would configure the root logger for every later test.
    monkeypatch.setattr(logging, "basicConfig", lambda **kwargs: None)
    assert run("scan", "models/good.pkl", "--debug", cwd=samples).returncode == 0


def test_rules_list_unknown_prefix_exits_2(tmp_path: Path, run: Runner) -> None:
    assert_one_line_error(
        run("rules", "list", "--prefix", "BST-NOPE", cwd=tmp_path), "no rule code starts with"
    )


def test_convert_end_to_end(tmp_path: Path, run: Runner) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    torch.save({"w": torch.zeros(2, 3), "b": torch.ones(3)}, tmp_path / "model.pt")
    proc = run("convert", "model.pt", "model.safetensors", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("wrote 2 tensors (")
    assert (tmp_path / "model.safetensors").stat().st_size > 0
    again = run("convert", "model.pt", "model.safetensors", cwd=tmp_path)
    assert_one_line_error(again, "already exists")


def test_nothing_to_scan_is_noticed(tmp_path: Path, run: Runner) -> None:
    proc = run("scan", ".", cwd=tmp_path)
    assert proc.returncode == 0
    assert "notice: no files were scanned" in proc.stdout


def test_notices_reach_stderr_with_machine_formats(tmp_path: Path, run: Runner) -> None:
    proc = run("scan", ".", "--format", "json", cwd=tmp_path)
    assert "bastion: notice: no files were scanned" in proc.stderr
    assert json.loads(proc.stdout)["notices"] == [
        "no files were scanned; check the paths and --include/--exclude globs"
    ]
