"""Settings for ``bastion scan``: flags beat ``BASTION_*`` environment, which beats the config file.

The config file is ``--config FILE`` if given, else ``bastion.toml`` (keys in a ``[scan]`` table or at top
level) or ``[tool.bastion]`` in ``pyproject.toml``, looked up in the current directory only. Paths in a
config file are relative to that file; paths from flags and the environment are relative to the current
directory. Every invalid value is a one-line :class:`ConfigError` naming where it came from and the key.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from bastion.errors import ConfigError
from bastion.findings import Severity

FORMAT_NAMES = ("table", "json", "sarif", "markdown")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True, slots=True)
class ScanSettings:
    """Resolved settings of one ``bastion scan`` run."""

    format: str = "table"
    fail_on: Severity = Severity.HIGH
    jobs: int = 0  # 0: one worker per core
    max_depth: int | None = None  # None: the engine's default (Limits.max_depth)
    suppressions: Path | None = None
    baseline: Path | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    digest: bool = False
    # key -> "flag", "environment", a config file path, or "default"; for --debug and tests.
    origin: Mapping[str, str] = field(default_factory=dict, compare=False)


KEYS = tuple(f.name for f in fields(ScanSettings) if f.name != "origin")
ENV_VARS = {key: f"BASTION_{key.upper()}" for key in KEYS}


# --- value parsers: each takes a raw value and returns the typed one, or raises ValueError ----------------


def _format(value: object) -> str:
    text = _str(value).strip().lower()
    if text not in FORMAT_NAMES:
        raise ValueError(f"unknown format {value!r} (expected one of: {', '.join(FORMAT_NAMES)})")
    return text


def _severity(value: object) -> Severity:
    return Severity.parse(_str(value))


def _count(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected a whole number, got {value!r}")
    try:
        number = int(value) if isinstance(value, int) else int(_str(value).strip())
    except ValueError:
        raise ValueError(f"expected a whole number, got {value!r}") from None
    if number < 0:
        raise ValueError(f"expected a number >= 0, got {number}")
    return number


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = _str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _globs(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = [v.strip() for v in value]
    else:
        raise ValueError(f"expected a list of glob strings, got {value!r}")
    return tuple(i for i in items if i)


def _path(value: object) -> Path:
    text = _str(value).strip()
    if not text:
        raise ValueError("expected a file path, got an empty string")
    return Path(text)


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


PARSERS: dict[str, Callable[[object], Any]] = {
    "format": _format,
    "fail_on": _severity,
    "jobs": _count,
    "max_depth": _count,
    "suppressions": _path,
    "baseline": _path,
    "include": _globs,
    "exclude": _globs,
    "digest": _bool,
}


def parse_value(key: str, value: object, where: str) -> Any:
    """Parse ``value`` for ``key``, raising a ConfigError that names ``where`` and the key."""
    try:
        return PARSERS[key](value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {key}: {exc}") from None


# --- sources ------------------------------------------------------------------------------------------


def find_config_file(cwd: Path) -> Path | None:
    """``bastion.toml`` in ``cwd``, else ``pyproject.toml`` if it has a ``[tool.bastion]`` table."""
    candidate = cwd / "bastion.toml"
    if candidate.is_file():
        return candidate
    pyproject = cwd / "pyproject.toml"
    if pyproject.is_file() and "bastion" in _read_toml(pyproject).get("tool", {}):
        return pyproject
    return None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None


def _scan_table(path: Path, data: dict[str, Any]) -> tuple[dict[str, Any], str]:
    where = str(path)
    if path.name == "pyproject.toml":
        tool = data.get("tool", {})
        data = tool.get("bastion", {}) if isinstance(tool, dict) else {}
        where = f"{path} [tool.bastion]"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a table")
    # Top-level keys, then the [scan] table over them; other commands' tables (e.g. [guard]) are
    # not ours to judge.
    table = {k: v for k, v in data.items() if not isinstance(v, dict)}
    scan = data.get("scan")
    if isinstance(scan, dict):
        table.update(scan)
    return table, where


def file_values(path: Path) -> tuple[dict[str, Any], str]:
    """Parsed settings from a config file, and the name to report it by."""
    table, where = _scan_table(path, _read_toml(path))
    values: dict[str, Any] = {}
    for raw_key, raw in table.items():
        key = raw_key.replace("-", "_")
        if key not in PARSERS:
            raise ConfigError(f"{where}: unknown key {raw_key!r} (expected one of: {', '.join(KEYS)})")
        value = parse_value(key, raw, where)
        if isinstance(value, Path) and not value.is_absolute():
            value = path.parent / value
        values[key] = value
    return values, str(path)


def env_values(environ: Mapping[str, str]) -> dict[str, Any]:
    """Parsed settings from ``BASTION_*`` variables; empty variables count as unset."""
    values: dict[str, Any] = {}
    for key, var in ENV_VARS.items():
        raw = environ.get(var, "")
        if raw.strip():
            values[key] = parse_value(key, raw, f"environment variable {var}")
    return values


def resolve(
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    cwd: Path,
    config_file: Path | None = None,
) -> ScanSettings:
    """Merge defaults, the config file, the environment and flags (``None`` = not given), later wins."""
    path = config_file if config_file is not None else find_config_file(cwd)
    layers: list[tuple[dict[str, Any], str]] = []
    if path is not None:
        layers.append(file_values(path))
    layers.append((env_values(environ), "environment"))
    layers.append(({k: v for k, v in flags.items() if v is not None}, "flag"))
    settings = ScanSettings()
    origin = dict.fromkeys(KEYS, "default")
    for values, source in layers:
        unknown = set(values) - set(KEYS)
        if unknown:
            raise ConfigError(f"{source}: unknown setting {sorted(unknown)[0]!r}")
        settings = replace(settings, **values)
        origin.update(dict.fromkeys(values, source))
    return replace(settings, origin=origin)
