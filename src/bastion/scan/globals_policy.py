"""The curated pickle import policy: exact allowlist per framework profile, denylist for severity only.

A pickle global is SAFE only when its exact ``(module, qualname)`` pair is listed in a profile of
``data/globals.toml``. Anything else is UNKNOWN, or DANGEROUS when the denylist, a dunder, or a
dotted qualname (attribute traversal such as ``argparse._os.system``) says so. The denylist never
makes anything safe: it only attaches severity and an explanation.
"""

from __future__ import annotations

import _compat_pickle
import enum
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


class ImportVerdict(enum.StrEnum):
    """How the policy rates one pickle import."""

    SAFE = "safe"
    DANGEROUS = "dangerous"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class ImportRating:
    """The verdict for one import, why, and which profile allowed it (if any)."""

    verdict: ImportVerdict
    reason: str
    profile: str | None = None


@dataclass(frozen=True, slots=True)
class _Policy:
    version: str
    allowed: Mapping[tuple[str, str], str]  # (module, name) -> profile
    profiles: tuple[str, ...]
    deny_modules: Mapping[str, str]
    deny_names: Mapping[tuple[str, str], str]


def _load() -> _Policy:
    # A plain file read: importlib.resources would pull zipfile and threading into every scan's start-up.
    text = (Path(__file__).parent / "data" / "globals.toml").read_text(encoding="utf-8")
    doc = tomllib.loads(text)
    allowed: dict[tuple[str, str], str] = {}
    for profile, body in doc["profiles"].items():
        for module, name in body["globals"]:
            allowed.setdefault((str(module), str(name)), str(profile))
    deny = doc["deny"]
    names: dict[tuple[str, str], str] = {}
    for key, reason in deny["names"].items():
        module, _, name = str(key).partition(":")
        names[(module, name)] = str(reason)
    return _Policy(
        version=str(doc["version"]),
        allowed=allowed,
        profiles=tuple(str(p) for p in doc["profiles"]),
        deny_modules={str(k): str(v) for k, v in deny["modules"].items()},
        deny_names=names,
    )


_POLICY = _load()
POLICY_VERSION: str = _POLICY.version
PROFILES: tuple[str, ...] = _POLICY.profiles


def normalise(module: str, name: str) -> tuple[str, str]:
    """Apply the Python 2 names mapping pickle uses for protocols 0-2 (``__builtin__`` -> ``builtins``)."""
    mapped = _compat_pickle.NAME_MAPPING.get((module, name))
    if mapped is not None:
        return mapped
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def is_dunder(part: str) -> bool:
    """True for ``__x__`` names, the usual way to reach interpreter internals."""
    return len(part) > 4 and part.startswith("__") and part.endswith("__")


@lru_cache(maxsize=4096)
def rate_import(module: str, name: str) -> ImportRating:
    """Rate the pickle global ``module.name`` against the curated policy."""
    mod, qual = normalise(module, name)
    profile = _POLICY.allowed.get((mod, qual))
    if profile is not None:
        return ImportRating(ImportVerdict.SAFE, f"on the curated {profile} allowlist", profile)
    denied = _denied(mod, qual) or (_denied(module, name) if (mod, qual) != (module, name) else None)
    if denied is not None:
        return ImportRating(ImportVerdict.DANGEROUS, denied)
    parts = [*mod.split("."), *qual.split(".")]
    dunders = [p for p in parts if is_dunder(p) and p != "__main__"]
    if dunders:
        return ImportRating(ImportVerdict.DANGEROUS, f"reaches interpreter internals through {dunders[0]}")
    if "." in qual:
        return ImportRating(
            ImportVerdict.DANGEROUS, "attribute traversal in the name reaches objects the module only imports"
        )
    if mod == "__main__":
        return ImportRating(
            ImportVerdict.UNKNOWN, "defined in the script that saved the file; its code is not here"
        )
    return ImportRating(ImportVerdict.UNKNOWN, "not on the curated safe list")


def is_traversal(module: str, name: str) -> bool:
    """True when the name walks attributes (dotted qualname) or names a dunder not listed by name."""
    mod, qual = normalise(module, name)
    if "." in qual:
        return True
    if (mod, qual) in _POLICY.deny_names:
        return False
    return any(is_dunder(p) and p != "__main__" for p in (*mod.split("."), qual))


def _denied(module: str, name: str) -> str | None:
    reason = _POLICY.deny_names.get((module, name))
    if reason is None and "." in name:
        reason = _POLICY.deny_names.get((module, name.split(".", 1)[0]))
    if reason is not None:
        return reason
    # Prefix match on the dotted path, so asyncio matches asyncio.unix_events and torch + hub.load matches.
    parts = f"{module}.{name}".split(".")
    for i in range(1, len(parts) + 1):
        reason = _POLICY.deny_modules.get(".".join(parts[:i]))
        if reason is not None:
            return reason
    return None


def safe_globals(profiles: Iterable[str] | None = None) -> frozenset[tuple[str, str]]:
    """The allowed ``(module, qualname)`` pairs of ``profiles`` (every profile when None)."""
    if profiles is None:
        return frozenset(_POLICY.allowed)
    wanted = set(profiles)
    unknown = wanted - set(PROFILES)
    if unknown:
        raise ValueError(
            f"unknown import profile(s): {', '.join(sorted(unknown))}; known: {', '.join(PROFILES)}"
        )
    return frozenset(pair for pair, profile in _POLICY.allowed.items() if profile in wanted)
