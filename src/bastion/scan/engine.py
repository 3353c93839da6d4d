"""Walk the paths given, identify each file by content, dispatch it to format scanners, settle verdicts."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import posixpath
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from bastion import __version__
from bastion.errors import BastionError, InputError, LimitExceeded, MalformedInput
from bastion.findings import Finding, Location, Report, Severity, Skipped, Target, Verdict
from bastion.scan.context import INCOMPLETE_RULE, Limits, ScanContext, Source, env_jobs
from bastion.scan.formats import extension_mismatch, identify
from bastion.scan.registry import load_all, scanners_for

_HASH_CHUNK = 8 << 20


@dataclass(frozen=True, slots=True)
class ScanOptions:
    """How a scan walks and bounds its input."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    digest: bool = False
    jobs: int = 0  # 0: one worker per available core
    follow_symlinks: bool = False


Progress = Callable[[int, int], None]


def dispatch(source: Source, location: Location, ctx: ScanContext) -> None:
    """Identify ``source`` by content and run every scanner of its format, failing closed on errors."""
    head = source.head(512)
    fmt = identify(head, source.size, source.name)
    expected = extension_mismatch(source.name, fmt)
    if expected is not None:
        ctx.report(
            "BST-FMT-001",
            location,
            f"The extension promises {'/'.join(sorted(expected))} but the content is {fmt}; "
            "loaders that trust the extension and scanners that route by it disagree.",
            {"detected": fmt.value, "expected": ",".join(sorted(expected))},
        )
    ctx.add_target(location, fmt.value, source.size)
    for scan in scanners_for(fmt):
        try:
            scan(source, location, ctx)
        except LimitExceeded as exc:
            ctx.incomplete(location, exc.diagnostics())
        except MalformedInput as exc:
            ctx.incomplete(location, exc.diagnostics())
        except BastionError as exc:
            ctx.incomplete(location, exc.diagnostics())
        except RecursionError:
            ctx.incomplete(location, "structure nested too deeply to analyse")
        except MemoryError:
            ctx.incomplete(location, "content too large to analyse in memory")
        except Exception as exc:  # a scanner bug must fail closed, never pass a file as clean
            import logging  # only here: the scan path should not pay for logging's import

            logging.getLogger(__name__).debug(
                "scanner %s failed on %s", scan.__name__, location.display, exc_info=True
            )
            ctx.incomplete(location, f"scanner error ({type(exc).__name__}: {exc})")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


@dataclass(slots=True)
class FileResult:
    """What scanning one top-level file produced (picklable, to come back from a worker)."""

    targets: list[Target]
    findings: list[Finding]
    skipped: list[Skipped]


def scan_file(path: Path, display: str, options: ScanOptions) -> FileResult:
    """Scan one file on disk and everything nested in it."""
    ctx = ScanContext(limits=options.limits, digest=options.digest, dispatch=dispatch)
    location = Location(display)
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            dispatch(Source(fh, size, path.name, path), location, ctx)
    except OSError as exc:
        ctx.skipped.append(Skipped(location, f"cannot read: {exc.strerror or exc}"))
        ctx.incomplete(location, f"cannot read the file ({exc.strerror or exc})")
    if options.digest and ctx.targets and ctx.targets[0].location == location:
        try:
            ctx.targets[0] = replace(ctx.targets[0], sha256=_sha256(path))
        except OSError as exc:
            ctx.skipped.append(Skipped(location, f"cannot hash: {exc.strerror or exc}"))
    return FileResult(ctx.targets, ctx.findings, ctx.skipped)


def _matches(rel: str, patterns: Sequence[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in patterns)


def iter_files(paths: Iterable[str], options: ScanOptions) -> Iterator[tuple[Path, str]]:
    """Yield (path, display name) for every file to scan, relative as given, honouring globs."""
    for given in paths:
        root = Path(given)
        if not root.exists():
            raise InputError(f"{given}: no such file or directory")
        given = posixpath.normpath(given)  # `./models` and `models` must fingerprint alike
        if root.is_file():
            yield root, given
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=options.follow_symlinks):
            dirnames.sort()
            for fname in sorted(filenames):
                full = Path(dirpath) / fname
                rel = full.relative_to(root).as_posix()
                if options.include and not _matches(rel, options.include):
                    continue
                if options.exclude and _matches(rel, options.exclude):
                    continue
                if full.is_symlink() and not options.follow_symlinks:
                    continue
                yield full, rel if given == "." else f"{given}/{rel}"


def _scan_one(job: tuple[Path, str, ScanOptions]) -> FileResult:
    return scan_file(*job)


def settle_verdicts(targets: list[Target], findings: list[Finding]) -> list[Target]:
    """Give each target the verdict of the worst finding at it or inside it."""
    by_path: dict[str, list[Finding]] = {}
    for f in findings:
        by_path.setdefault(f.location.path, []).append(f)
    settled = []
    for t in targets:
        members = t.location.members
        depth = len(members)
        mine = [f for f in by_path.get(t.location.path, ()) if f.location.members[:depth] == members]
        settled.append(replace(t, verdict=verdict_of(mine)))
    return settled


def verdict_of(findings: Sequence[Finding]) -> Verdict:
    """malicious beats error beats suspicious beats clean."""
    if any(f.severity >= Severity.HIGH and f.rule_id != INCOMPLETE_RULE for f in findings):
        return Verdict.MALICIOUS
    if any(f.rule_id == INCOMPLETE_RULE for f in findings):
        return Verdict.ERROR
    if any(f.severity >= Severity.MEDIUM for f in findings):
        return Verdict.SUSPICIOUS
    return Verdict.CLEAN


def scan_paths(
    paths: Sequence[str], options: ScanOptions | None = None, progress: Progress | None = None
) -> Report:
    """Scan files, directories and archives; the library entry point behind ``bastion scan``."""
    options = options or ScanOptions()
    started = time.perf_counter()
    files = list(iter_files(paths, options))
    report = Report(tool="bastion", version=__version__)
    jobs = options.jobs or env_jobs()
    work = [(p, d, options) for p, d in files]
    results: Iterable[FileResult]
    if jobs > 1 and len(work) > 4:
        from bastion.workers import process_pool, stop_pool  # only a directory scan pays for a pool

        load_all()  # once in the parent, so forked workers share the imported scanners
        pool = process_pool(jobs)
        interrupted = False
        try:
            results = list(
                _with_progress(
                    pool.map(_scan_one, work, chunksize=max(1, min(16, len(work) // (jobs * 32)))),
                    len(work),
                    progress,
                )
            )
        except KeyboardInterrupt:
            interrupted = True
            raise
        finally:
            stop_pool(pool, interrupted)
    else:
        results = list(_with_progress(map(_scan_one, work), len(work), progress))
    for r in results:
        report.targets.extend(r.targets)
        report.findings.extend(r.findings)
        report.skipped.extend(r.skipped)
    report.targets = settle_verdicts(report.targets, report.findings)
    report.duration_s = time.perf_counter() - started
    return report


def _with_progress(
    results: Iterable[FileResult], total: int, progress: Progress | None
) -> Iterator[FileResult]:
    for done, r in enumerate(results, 1):
        if progress is not None:
            progress(done, total)
        yield r
