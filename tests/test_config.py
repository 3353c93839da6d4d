"""Settings precedence (flags > BASTION_* environment > config file > defaults) and clear config errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.config import ScanSettings, env_values, find_config_file, resolve
from bastion.errors import ConfigError
from bastion.findings import Severity

NO_FLAGS: dict[str, object] = {}


def test_defaults_without_any_source(tmp_path: Path) -> None:
    settings = resolve(NO_FLAGS, {}, tmp_path)
    assert settings == ScanSettings()
    assert settings.format == "table"
    assert settings.fail_on is Severity.HIGH
    assert set(settings.origin.values()) == {"default"}


def test_flag_beats_env_beats_bastion_toml(tmp_path: Path) -> None:
    (tmp_path / "bastion.toml").write_text('[scan]\nfail-on = "low"\nformat = "markdown"\njobs = 3\n')
    file_only = resolve(NO_FLAGS, {}, tmp_path)
    assert (file_only.fail_on, file_only.format, file_only.jobs) == (Severity.LOW, "markdown", 3)
    env = {"BASTION_FAIL_ON": "medium", "BASTION_FORMAT": "json"}
    with_env = resolve(NO_FLAGS, env, tmp_path)
    assert (with_env.fail_on, with_env.format, with_env.jobs) == (Severity.MEDIUM, "json", 3)
    with_flag = resolve({"fail_on": Severity.CRITICAL, "format": None}, env, tmp_path)
    assert (with_flag.fail_on, with_flag.format) == (Severity.CRITICAL, "json")
    assert with_flag.origin["fail_on"] == "flag"
    assert with_flag.origin["format"] == "environment"
    assert with_flag.origin["jobs"] == str(tmp_path / "bastion.toml")


def test_bastion_toml_top_level_keys(tmp_path: Path) -> None:
    (tmp_path / "bastion.toml").write_text("max_depth = 2\ndigest = true\n[guard]\nport = 1\n")
    settings = resolve(NO_FLAGS, {}, tmp_path)
    assert settings.max_depth == 2
    assert settings.digest is True


def test_pyproject_tool_bastion(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n[tool.bastion]\ninclude = ["*.pkl", "*.pt"]\nsuppressions = "sec/supp.toml"\n'
    )
    settings = resolve(NO_FLAGS, {}, tmp_path)
    assert settings.include == ("*.pkl", "*.pt")
    assert settings.suppressions == tmp_path / "sec" / "supp.toml"  # relative to the config file


def test_pyproject_without_tool_bastion_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert find_config_file(tmp_path) is None


def test_bastion_toml_wins_over_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.bastion]\nformat = "json"\n')
    (tmp_path / "bastion.toml").write_text('format = "sarif"\n')
    assert resolve(NO_FLAGS, {}, tmp_path).format == "sarif"


def test_explicit_config_file(tmp_path: Path) -> None:
    other = tmp_path / "ci" / "scan.toml"
    other.parent.mkdir()
    other.write_text('[scan]\nbaseline = "base.json"\n')
    (tmp_path / "bastion.toml").write_text('format = "sarif"\n')
    settings = resolve(NO_FLAGS, {}, tmp_path, other)
    assert settings.baseline == other.parent / "base.json"
    assert settings.format == "table"  # the discovered file is not read when --config names another


def test_env_lists_and_booleans(tmp_path: Path) -> None:
    values = env_values({"BASTION_INCLUDE": "*.pkl, *.pt,", "BASTION_DIGEST": "yes", "BASTION_JOBS": " "})
    assert values == {"include": ("*.pkl", "*.pt"), "digest": True}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"BASTION_FAIL_ON": "severe"},
            "environment variable BASTION_FAIL_ON: fail_on: unknown severity 'severe'",
        ),
        ({"BASTION_JOBS": "many"}, "environment variable BASTION_JOBS: jobs: expected a whole number"),
        ({"BASTION_MAX_DEPTH": "-1"}, "BASTION_MAX_DEPTH: max_depth: expected a number >= 0"),
        ({"BASTION_DIGEST": "maybe"}, "BASTION_DIGEST: digest: expected true or false"),
        ({"BASTION_FORMAT": "xml"}, "BASTION_FORMAT: format: unknown format 'xml'"),
    ],
)
def test_bad_environment_names_the_variable(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve(NO_FLAGS, env, tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[scan]\nfail_on = 3\n", r"bastion.toml: fail_on: expected a string"),
        ('[scan]\ncolour = "red"\n', r"bastion.toml: unknown key 'colour'"),
        ("jobs = true\n", r"bastion.toml: jobs: expected a whole number"),
        ('include = "*.pkl"\nexclude = [1]\n', r"bastion.toml: exclude: expected a list of glob strings"),
        ("format = \n", r"bastion.toml: invalid TOML"),
    ],
)
def test_bad_config_file_names_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "bastion.toml").write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        resolve(NO_FLAGS, {}, tmp_path)
    assert "\n" not in info.value.diagnostics()


def test_missing_explicit_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        resolve(NO_FLAGS, {}, tmp_path, tmp_path / "nope.toml")


def test_scan_table_overrides_top_level(tmp_path: Path) -> None:
    (tmp_path / "bastion.toml").write_text('format = "json"\njobs = 2\n[scan]\nformat = "sarif"\n')
    settings = resolve(NO_FLAGS, {}, tmp_path)
    assert (settings.format, settings.jobs) == ("sarif", 2)


def test_pyproject_scan_subtable(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.bastion.scan]\nexclude = ["*.bin"]\n')
    assert resolve(NO_FLAGS, {}, tmp_path).exclude == ("*.bin",)
