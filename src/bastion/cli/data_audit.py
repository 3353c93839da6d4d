"""``bastion data audit`` and ``bastion data sanitize``: thin commands over bastion.data.audit."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.cli.common import add_event_options, count_arg, note, seed_arg, severity_arg
from bastion.cli.registry import record_event
from bastion.errors import InputError, UsageError
from bastion.findings import Severity

if TYPE_CHECKING:
    from bastion.data.audit.base import AuditData, AuditOptions
    from bastion.data.audit.run import AuditResult

CHANNEL_NAMES = ("label", "backdoor", "outlier", "integrity")


def _require_audit_extra() -> None:
    # The audit needs the `data` extra's numerical stack; say so in one line instead of an ImportError.
    import importlib.util

    from bastion.errors import ConfigError

    missing = [m for m in ("numpy", "pandas", "sklearn", "cleanlab") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"bastion data audit needs {', '.join(missing)}: pip install 'bastion-ai[data]'")


def _channels_arg(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in CHANNEL_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown channel {unknown[0] if unknown else text!r}")
    return names


SANITIZE_HELP = """Audit DATA, then write the kept rows (CLEAN), the removed rows with their reasons (the
quarantine, in DATA's format) and a manifest of CLEAN with a lineage record.

Outputs: CLEAN and the quarantine must end in DATA's suffix, compression included (DATA NAME.csv.gz gives
NAME.clean.csv.gz and NAME.quarantine.csv.gz, compressed alike). No two outputs (-o, --quarantine, --manifest,
--report) may be the same file, none may be DATA, and their directories must exist. An output that already
exists is refused unless --force is given: a quarantine is evidence of what was removed and why, and the
manifest and report describe one run, so nothing is replaced silently. Everything is checked before the
audit starts, written to temporary files, and renamed into place together at the end; on a failure or an
interrupt (Ctrl-C, SIGTERM) nothing is written. When --validate rejects the result nothing is written,
not even --report.

--validate: a recipe's output goes to stderr, and each of its calls (build, fit, predict) is stopped after
--recipe-timeout seconds (default 3600; 0 for no limit), which fails the run like any broken recipe.
Removing every row of a class rejects the set. The verdict compares accuracies as measured; the summary
also gives what one holdout row is worth and a 95% interval of the drop, and warnings (on stderr and in
the JSON) say when one row is worth more than --tolerance or when holdout rows copy training rows.

CSV and JSONL kept rows are copied byte for byte. A JSONL quarantine line is
{"bastion_row": ..., "bastion_channels": [...], "bastion_score": ..., "bastion_reason": ..., "record": ROW}
where ROW is the parsed line re-serialised as JSON (same values, not the same bytes).

An image folder (DATA/<class>/<images>, --label class) is sanitized into folders (default NAME.clean and
NAME.quarantine beside it): the kept and the removed images copied byte for byte under their relative
paths, the quarantine with reasons.csv (row, file, label, channels, score, reason, suggested_label).
Neither folder may be inside DATA or contain it; --force replaces an existing one only when it holds
nothing but images in class folders (and reasons.csv).
"""


def _non_negative(text: str, unit: str) -> float:
    """``text`` as a finite number >= 0 of ``unit``, or the argparse error that says what was expected."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of {unit}, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number of {unit} >= 0, got {text!r}")
    return value


def _tolerance_arg(text: str) -> float:
    """argparse type for ``--tolerance``: a finite number of accuracy points >= 0."""
    return _non_negative(text, "points")


# The same as bastion.data.validate.DEFAULT_RECIPE_TIMEOUT, which is not imported here: it would load numpy
# and scikit-learn's helpers on every start of the CLI.
RECIPE_TIMEOUT = 3600.0


def _seconds_arg(text: str) -> float:
    """argparse type for ``--recipe-timeout``: a finite number of seconds >= 0 (0: no limit)."""
    return _non_negative(text, "seconds")


def _add_audit_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "path",
        type=Path,
        metavar="DATA",
        help="CSV, TSV, Parquet, JSONL table (the text ones also .gz, .bz2, .zst), .npz arrays, "
        "or an image folder DIR/<class>/<images>",
    )
    cmd.add_argument(
        "--label",
        required=True,
        metavar="COLUMN",
        help="the label column (or .npz array; 'class' for an image folder: the class folder's name)",
    )
    cmd.add_argument(
        "--reference", type=Path, metavar="TRUSTED", help="trusted data to measure drift against"
    )
    cmd.add_argument("--source-column", metavar="COLUMN", help="column naming each row's source or feed")
    cmd.add_argument("--text-column", metavar="COLUMN", help="audit this text column through embeddings")
    cmd.add_argument(
        "--channels",
        type=_channels_arg,
        default=CHANNEL_NAMES,
        metavar="LIST",
        help="comma-separated subset of label,backdoor,outlier,integrity (default: all)",
    )
    cmd.add_argument("--seed", type=seed_arg, default=0, help="random seed (default 0)")
    cmd.add_argument(
        "--stream",
        action="store_true",
        help="audit in chunks with bounded memory (automatic above BASTION_AUDIT_IN_MEMORY_BYTES)",
    )
    cmd.add_argument("--chunk-rows", type=count_arg, default=100_000, help="rows per chunk when streaming")
    cmd.add_argument(
        "--workers",
        type=count_arg,
        default=2,
        help="processes when streaming (default 2, at most one per core)",
    )
    cmd.add_argument("--backend", choices=("local", "ray"), default="local", help="where chunks run")


def add_commands(commands: Any) -> None:
    """Register ``audit`` and ``sanitize`` under ``bastion data``."""
    audit = commands.add_parser("audit", help="find poisoned, mislabelled, outlying and duplicate rows")
    _add_audit_options(audit)
    audit.add_argument("--format", choices=("table", "json", "markdown"), default="table")
    audit.add_argument("--output", "-o", type=Path, metavar="FILE", help="write the report here")
    audit.add_argument(
        "--fail-on",
        type=severity_arg,
        default=Severity.HIGH,
        metavar="SEVERITY",
        help="exit 1 when a finding is at least this severe (default high)",
    )
    add_event_options(audit)
    audit.set_defaults(handler=run_audit_command)

    san = commands.add_parser(
        "sanitize",
        help="quarantine flagged rows, write clean data and a manifest",
        description=SANITIZE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_audit_options(san)
    san.add_argument(
        "--output", "-o", type=Path, metavar="CLEAN", help="cleaned data (default NAME.clean.EXT)"
    )
    san.add_argument(
        "--quarantine", type=Path, metavar="FILE", help="removed rows (default NAME.quarantine.EXT)"
    )
    san.add_argument(
        "--manifest",
        type=Path,
        metavar="FILE",
        help="manifest of the cleaned data (default NAME.clean.manifest.json)",
    )
    san.add_argument("--report", type=Path, metavar="FILE", help="also write the audit report (JSON) here")
    san.add_argument(
        "--force", action="store_true", help="replace outputs that already exist (the quarantine included)"
    )
    san.add_argument(
        "--input-manifest",
        type=Path,
        metavar="MANIFEST",
        help="the input's manifest (bastion data fingerprint): check the input against it, record its digest",
    )
    san.add_argument("--sign-key", type=Path, metavar="KEY.pem", help="sign the new manifest (Ed25519)")
    san.add_argument("--validate", action="store_true", help="retrain before and after; accept or reject")
    san.add_argument("--recipe", default="mlp", help="mlp, logreg, forest or module:Class (default mlp)")
    san.add_argument("--holdout", type=Path, metavar="TRUSTED", help="clean held-out data for --validate")
    san.add_argument(
        "--tolerance",
        type=_tolerance_arg,
        default=1.0,
        metavar="POINTS",
        help="allowed accuracy drop, a number >= 0 (default 1)",
    )
    san.add_argument(
        "--recipe-timeout",
        type=_seconds_arg,
        default=RECIPE_TIMEOUT,
        metavar="SECONDS",
        help=f"stop a recipe's build, fit or predict after this long (default {RECIPE_TIMEOUT:g}; 0: none)",
    )
    san.add_argument("--format", choices=("table", "json"), default="table", help="summary format")
    add_event_options(san)
    san.set_defaults(handler=run_sanitize_command)


def _options(args: argparse.Namespace) -> AuditOptions:
    from bastion.data.audit.base import AuditOptions

    return AuditOptions(seed=args.seed, channels=args.channels)


def _audit(
    args: argparse.Namespace, loaded: Callable[[AuditData], None] | None = None
) -> tuple[AuditResult, AuditData | None, dict[str, Any]]:
    """Load or stream the data, run the channels, and build the audit's lineage record.

    ``loaded`` is called with the data once it is in memory, before the channels run: what depends on the
    data's encoding (a --holdout) is refused there rather than after a long audit.
    """
    from bastion.data.audit.load import load_dataset, load_reference, should_stream
    from bastion.data.audit.run import run_audit
    from bastion.data.lineage import dataset_digest, dataset_identity, lineage_record
    from bastion.data.readers import check_unchanged, dataset_state

    _require_audit_extra()
    path: Path = args.path
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir() and args.stream:
        raise UsageError(
            "--stream: an image folder is decoded in memory (within BASTION_AUDIT_IN_MEMORY_BYTES); "
            "drop --stream"
        )
    # Taken before anything reads the file: the fingerprint the lineage records must name the bytes the
    # audit saw, and is taken in a pass of its own.
    before = dataset_state(path)
    streaming = args.stream or should_stream(path)
    if streaming and args.text_column is not None:
        raise UsageError("--text-column: text is embedded in memory; the streaming audit reads tables only")
    options = _options(args)
    # The fingerprint: without its Merkle root no later step could match this audit to the data (a bare
    # SHA-256 names the bytes but not a manifest). Data that fits in memory is fingerprinted once it is
    # loaded (the loader checks its size first), in a second or two, so a row the fingerprint's strict
    # reader refuses (a JSON key given twice, NaN) fails the run before the audit rather than after it; a
    # streamed file after its audit, whose first chunk already says what is wrong with the file (its own
    # reader refuses the same rows), rather than after minutes of hashing.
    consumed: dict[str, str] = {}
    data: AuditData | None = None
    if streaming:
        from bastion.data.audit.stream import stream_audit

        note(f"{path}: streaming in chunks of {args.chunk_rows} rows")
        result = stream_audit(
            path,
            args.label,
            source_column=args.source_column,
            reference=args.reference,
            options=options,
            chunk_rows=max(args.chunk_rows, 1),
            backend=args.backend,
            workers=max(args.workers, 1),
        )
        consumed.update(dataset_identity(path))
    else:
        data = load_dataset(path, args.label, source_column=args.source_column, text_column=args.text_column)
        consumed.update(dataset_identity(path))
        folder = getattr(data, "folder", None)  # an image folder: say how its images were read
        if folder:
            from bastion.data.audit.image_folder import folder_note

            note(f"{path}: {folder_note(folder)}")
        if loaded is not None:
            loaded(data)
        reference = None
        if args.reference is not None:
            reference = load_reference(
                args.reference,
                data,
                args.label,
                source_column=args.source_column,
                text_column=args.text_column,
            )
        result = run_audit(data, options, reference)
    check_unchanged(path, before)
    if args.reference is not None:
        consumed["reference"] = dataset_digest(args.reference)
    parameters = {"label": args.label, "channels": list(options.channels), "seed": args.seed}
    return result, data, lineage_record("audit", consumed, {}, parameters)


def _write(path: Path | None, text: str) -> None:
    from bastion.atomic import atomic_write_text

    if path is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        try:
            atomic_write_text(path, text)
        except OSError as exc:
            raise InputError(f"{path}: cannot write the report ({exc.strerror or exc})") from None


def _check_report_path(output: Path, inputs: list[Path | None]) -> None:
    """Refuse, before the audit, a report path that cannot be written or would replace an input.

    A streamed audit of a large file runs for a long time before the report is written: a missing
    directory found only then wastes the run, and ``-o DATA`` replaced the audited data with its report.
    """
    from bastion.atomic import same_file

    for source in inputs:
        if source is not None and same_file(output, source):
            raise UsageError(f"--output {output}: would overwrite the input {source}")
        if source is not None and source.is_dir() and source.resolve() in output.resolve().parents:
            # The report would become a file of the image folder it describes.
            raise UsageError(f"--output {output}: inside the input folder {source}; write it outside")
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{output}: cannot write the report (directory {parent} does not exist)")
    if output.is_dir():
        raise InputError(f"{output}: cannot write the report (it is a directory)")


def _data_subject(lineage: dict[str, Any]) -> str:
    consumed = lineage["consumed"]
    return str(consumed.get("data_root") or consumed["data"])


def _audit_payload(args: argparse.Namespace, result: AuditResult, lineage: dict[str, Any]) -> dict[str, Any]:
    severities: dict[str, int] = {}
    for finding in result.findings:
        severities[finding.severity.label] = severities.get(finding.severity.label, 0) + 1
    return {
        "path": str(args.path),
        "data": lineage["consumed"]["data"],
        "rows": result.n_rows,
        "flagged": len(result.rows),
        "quarantine": len(result.removed_rows),
        "findings": severities,
        "channels": list(lineage["parameters"]["channels"]),
    }


def run_audit_command(args: argparse.Namespace) -> int:
    """Audit the data and report every flagged row; exit 1 when a finding reaches --fail-on."""
    from bastion.data.audit.report import RENDERERS

    if args.output is not None:
        _check_report_path(args.output, [args.path, args.reference])
    result, _, lineage = _audit(args)
    # The event first: a store that cannot be written (a bad --db) then fails the run before any report
    # exists, rather than leaving a report of an audit the log never saw.
    record_event(args, "data.audited", _data_subject(lineage), _audit_payload(args, result, lineage))
    _write(
        args.output,
        RENDERERS[args.format](result, label=args.label, lineage=lineage),
    )
    worst = max((f.severity for f in result.findings), default=None)
    note(
        f"audited {result.n_rows} rows in {result.duration_s:.1f}s: {len(result.rows)} flagged, "
        f"{len(result.removed_rows)} to quarantine"
    )
    return 1 if worst is not None and worst >= args.fail_on else 0


@contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """While the command runs, SIGTERM raises SystemExit(143) so staged temporary files are removed.

    Python's default for SIGTERM kills the process on the spot, skipping every ``finally``; raising
    instead unwinds through the staging context, which deletes what it staged and writes nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return

    def terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    except SystemExit as exc:
        if exc.code == 128 + signal.SIGTERM:
            note("terminated; nothing written")
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def _sanitize_outputs(args: argparse.Namespace) -> Any:
    from bastion.data.sanitize import SanitizeOutputs

    defaults = SanitizeOutputs.beside(args.path)
    return SanitizeOutputs(
        clean=args.output or defaults.clean,
        quarantine=args.quarantine or defaults.quarantine,
        manifest=args.manifest or defaults.manifest,
        report=args.report,
    )


def _check_sanitize_request(args: argparse.Namespace, outputs: Any) -> dict[str, str]:
    """Everything that can be refused without auditing: the input, the outputs, the options.

    Returns what ``--input-manifest`` adds to the lineage (empty without it).
    """
    from bastion.data.audit.load import should_stream
    from bastion.data.sanitize import check_outputs

    path: Path = args.path
    if not path.exists():
        raise InputError(f"{path}: no such file")
    check_outputs(path, outputs, force=args.force)  # a folder is an image folder, its outputs folders
    if args.validate:
        from bastion.data.validate import make_estimator

        if args.stream or should_stream(path):
            raise UsageError("--validate retrains on the data, which needs it in memory; drop --stream")
        # An image folder is held out by another folder of the same layout.
        if args.holdout is not None and not (
            args.holdout.is_file() or (args.path.is_dir() and args.holdout.is_dir())
        ):
            raise InputError(f"--holdout {args.holdout}: no such file")
        # An unimportable recipe fails before the audit.
        make_estimator(args.recipe, args.seed, timeout=args.recipe_timeout)
    if args.input_manifest is None:
        return {}
    if path.is_dir():
        from bastion.data.audit.image_folder import folder_identity_from_manifest

        return folder_identity_from_manifest(path, args.input_manifest)
    from bastion.data.lineage import identity_from_manifest

    return identity_from_manifest(path, args.input_manifest, {})


def run_sanitize_command(args: argparse.Namespace) -> int:
    """Audit, optionally validate by retraining, then write clean data, quarantine and a signed manifest."""
    return _run_sanitize(args)


def _run_sanitize(args: argparse.Namespace) -> int:
    from bastion.data.audit.report import render_json
    from bastion.data.readers import dataset_state
    from bastion.data.sanitize import write_sanitized
    from bastion.data.signing import load_private_key

    _require_audit_extra()
    outputs = _sanitize_outputs(args)
    from_manifest = _check_sanitize_request(args, outputs)
    key = load_private_key(args.sign_key) if args.sign_key else None  # a bad key fails before the work
    holdouts: list[AuditData] = []

    def load_holdout(data: AuditData) -> None:
        holdouts.append(_load_holdout(args, data))

    wants_holdout = args.validate and args.holdout is not None
    source_state = dataset_state(args.path) if args.path.exists() else None
    result, data, audit_lineage = _audit(args, load_holdout if wants_holdout else None)
    audit_lineage["consumed"].update(from_manifest)
    report_text = render_json(result, label=args.label, lineage=audit_lineage)
    validation = None
    if args.validate:
        validation = _validate(args, result, data, holdouts[0] if holdouts else None)
        for warning in validation.warnings:
            note(f"warning: {warning}")
    summary: dict[str, Any] = {
        "input": str(args.path),
        "rows": result.n_rows,
        "quarantined": len(result.removed_rows),
        "kept": result.n_rows - len(result.removed_rows),
        "validation": None if validation is None else validation.to_json(),
    }
    if validation is not None and not validation.accepted:
        # "Nothing written" includes --report: the outputs of one run are written together or not at all.
        summary["written"] = False
        record_event(
            args,
            "data.sanitize_rejected",
            _data_subject(audit_lineage),
            {**_audit_payload(args, result, audit_lineage), "validation": validation.to_json()},
        )
        _emit_summary(args, summary, validation.verdict)
        return 1
    consumed = {
        **audit_lineage["consumed"],
        "audit_report": "sha256:" + hashlib.sha256(report_text.encode("utf-8")).hexdigest(),
    }
    parameters: dict[str, Any] = dict(audit_lineage["parameters"])
    if validation is not None:
        parameters["validation"] = validation.to_json()
    # Only the writing needs the handler: nothing is staged before it. Installed for the whole run, it was
    # inherited by the forked workers of cleanlab's pool during the audit, and Pool.terminate, which stops
    # its workers with SIGTERM, then hung now and then joining a worker that did not die.
    with _sigterm_as_exit():
        manifest = write_sanitized(
            args.path,
            result,
            outputs,
            consumed=consumed,
            parameters=parameters,
            key=key,
            report=report_text.encode("utf-8") if outputs.report is not None else None,
            force=args.force,
            unchanged_since=source_state,
        )
    summary.update(
        written=True,
        clean=str(outputs.clean),
        quarantine=str(outputs.quarantine),
        manifest=str(outputs.manifest),
        clean_manifest_digest="manifest-sha256:" + manifest.digest(),
        signed=key is not None,
    )
    if outputs.report is not None:
        summary["report"] = str(outputs.report)
    verdict = validation.verdict if validation is not None else "not validated (use --validate)"
    record_event(
        args,
        "data.sanitized",
        _data_subject(audit_lineage),
        {
            **_audit_payload(args, result, audit_lineage),
            "clean_manifest_digest": summary["clean_manifest_digest"],
            "clean": summary["clean"],
            "quarantine_file": summary["quarantine"],
            "validation": summary["validation"],
        },
    )
    _emit_summary(args, summary, verdict)
    return 0


def _load_holdout(args: argparse.Namespace, data: AuditData) -> AuditData:
    """The --holdout encoded like ``data`` and checked for use (not the training rows again)."""
    from bastion.data.audit.load import load_companion
    from bastion.data.validate import check_holdout

    try:
        holdout = load_companion(args.holdout, data, args.label, text_column=args.text_column)
    except InputError as exc:
        message = exc.diagnostics()
        # Some loader messages name only a column; say which file it is in.
        if str(args.holdout) not in message:
            message = f"--holdout {args.holdout}: {message}"
        raise InputError(message) from None
    # validate_sanitization checks it again (it is also a library call); here it fails before the audit.
    check_holdout(data, holdout)
    return holdout


def _validate(
    args: argparse.Namespace, result: AuditResult, data: AuditData | None, holdout: AuditData | None
) -> Any:
    from bastion.data.validate import validate_sanitization

    if data is None:
        raise UsageError("--validate retrains on the data, which needs it in memory; drop --stream")
    backdoor = result.channels.get("backdoor")
    patterns = list(backdoor.summary.get("patterns", [])) if backdoor is not None else []
    return validate_sanitization(
        data,
        result.removed_rows,
        patterns,
        recipe=args.recipe,
        holdout=holdout,
        tolerance_points=args.tolerance,
        seed=args.seed,
        recipe_timeout=args.recipe_timeout,
    )


def _emit_summary(args: argparse.Namespace, summary: dict[str, Any], verdict: str) -> None:
    if args.format == "json":
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        lines = [f"{summary['input']}: {summary['rows']} rows, {summary['quarantined']} quarantined"]
        validation = summary.get("validation")
        if validation is not None:
            lines.append(
                f"validation ({validation['recipe']}, holdout {validation['holdout']}): accuracy "
                f"{validation['accuracy_before']:.2f}% -> {validation['accuracy_after']:.2f}%"
            )
            interval = validation.get("drop_ci95_points")
            if interval:  # absent from a result built by hand
                lines.append(
                    f"  one holdout row: {validation['accuracy_step_points']:.2f} points; "
                    f"drop 95% CI {interval[0]:.2f} to {interval[1]:.2f} points"
                )
            for name, before in validation["attack_success_before"].items():
                after = validation["attack_success_after"][name]
                lines.append(f"  backdoor on {name}: attack success {before:.1f}% -> {after:.1f}%")
        lines.append(verdict)
        if summary.get("written"):
            lines.append(f"clean data: {summary['clean']}")
            lines.append(f"quarantine: {summary['quarantine']}")
            lines.append(f"manifest:   {summary['manifest']}" + (" (signed)" if summary["signed"] else ""))
        else:
            lines.append("nothing written: the input is unchanged and the flags stay review items")
        sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
