"""The rules of the zip scanner: archive anomalies and PyTorch archive structure.

Importing this module registers them; :mod:`bastion.scan.zip_scan` imports it and reports by code.
"""

from __future__ import annotations

from bastion.findings import Severity
from bastion.rules import CWE_502, OWASP_LLM03, SUPPLY_CHAIN_REFS, Reference, Rule, register

_ZIP_REFS = (CWE_502, OWASP_LLM03, Reference("PKWARE APPNOTE.TXT (zip specification)"))
_RECREATE = (
    "Re-create the archive with a standard tool (`torch.save`, `numpy.savez`, `zip`) from a trusted copy of "
    "the model, or convert it to safetensors with `bastion convert`."
)

ZIP_POLYGLOT = register(
    Rule(
        code="BST-ZIP-001",
        name="pickle-prefixed-zip",
        severity=Severity.CRITICAL,
        summary="A pickle sits in front of a zip archive, so torch.load and zip readers see different files.",
        what_it_does=(
            "Finds a zip archive (the format of PyTorch checkpoints) whose first member does not start at "
            "byte 0, and whose leading bytes are a pickle."
        ),
        why_bad=(
            "Zip readers locate an archive from its end, so they see the benign checkpoint behind the "
            "prefix. `torch.load` looks at the first bytes, finds no zip signature, takes its legacy path "
            "and unpickles the prefix, which can run any code. Scanners that open the file as a zip never "
            "look at the prefix."
        ),
        example="`cat payload.pkl model.pt > model.pt` with an unchanged central directory.",
        use_instead=_RECREATE,
        false_positives="None known; no tool writes a pickle in front of a zip archive.",
        references=(*SUPPLY_CHAIN_REFS, Reference("fickling polyglot documentation")),
    )
)

ZIP_PREFIX = register(
    Rule(
        code="BST-ZIP-002",
        name="bytes-before-archive",
        severity=Severity.HIGH,
        summary="Unexplained bytes precede the first member of a zip archive.",
        what_it_does=(
            "Reports bytes between the start of the file and the first local header that the central "
            "directory uses."
        ),
        why_bad=(
            "Readers disagree about such files: some start at byte 0, others from the central directory. The "
            "gap can hold a hidden member or a second file format that a loader picks up while a scanner "
            "reads the archive."
        ),
        example=(
            "A zip whose first member starts at offset 4096, after a block of other data or a hidden entry."
        ),
        use_instead=_RECREATE,
        false_positives="Self-extracting archives carry an executable stub in front; model files never do.",
        references=_ZIP_REFS,
    )
)

ZIP_MISMATCH = register(
    Rule(
        code="BST-ZIP-003",
        name="local-central-header-mismatch",
        severity=Severity.HIGH,
        summary="A member's local header and its central-directory record disagree.",
        what_it_does=(
            "Compares each member's local header with its central-directory record: the name, the "
            "compression method and (when no data descriptor is used) the sizes and CRC."
        ),
        why_bad=(
            "Python's `zipfile` refuses a name mismatch while PyTorch's reader loads the member, so a "
            "scanner built on `zipfile` stops and misses the payload (CVE-2025-1944). Different sizes let "
            "two readers extract different bytes for the same member."
        ),
        example="`archive/data.pkl` in the central directory but `archive/data.pkX` in the local header.",
        use_instead=_RECREATE,
        references=(*_ZIP_REFS, Reference("CVE-2025-1944")),
    )
)

ZIP_CRC = register(
    Rule(
        code="BST-ZIP-004",
        name="crc-mismatch",
        severity=Severity.HIGH,
        summary="A member's content does not match the CRC-32 stored for it.",
        what_it_does=(
            "Computes the CRC-32 of every member the scanner reads in full and compares it with the stored "
            "value."
        ),
        why_bad=(
            "PyTorch ignores CRCs, but `zipfile` raises on a mismatch, so a scanner built on it aborts and a "
            "gate that treats the error as 'nothing found' lets the file through (CVE-2025-10156). No honest "
            "tool writes a wrong CRC."
        ),
        example="A checkpoint whose `data.pkl` was edited in place without updating the CRC.",
        use_instead=_RECREATE,
        false_positives="A download corrupted in transit; compare the file's digest with the publisher's.",
        references=(*_ZIP_REFS, Reference("CVE-2025-10156")),
    )
)

ZIP_FLAGS = register(
    Rule(
        code="BST-ZIP-005",
        name="encryption-flag-bits",
        severity=Severity.HIGH,
        summary="A member sets encryption or patched-data flag bits.",
        what_it_does=(
            "Reports members whose general-purpose flags set bit 0 (encrypted), 5 (patched data), 6 or 13 "
            "(strong encryption)."
        ),
        why_bad=(
            "`zipfile` refuses such members while some loaders ignore the bits and read the bytes anyway, so "
            "a scanner skips exactly the member the loader executes (CVE-2025-1945). Model archives are "
            "never encrypted."
        ),
        example="`archive/data.pkl` stored in plain text with the 'encrypted' bit set.",
        use_instead=_RECREATE,
        references=(*_ZIP_REFS, Reference("CVE-2025-1945")),
    )
)

ZIP_DUPLICATE = register(
    Rule(
        code="BST-ZIP-006",
        name="duplicate-member-names",
        severity=Severity.HIGH,
        summary="Two or more members of a zip archive have the same name.",
        what_it_does=(
            "Counts member names in the central directory and reports any that occur more than once."
        ),
        why_bad=(
            "Readers pick different copies: one takes the first entry, another the last. A scanner can "
            "examine a benign `data.pkl` while the loader unpickles a malicious one with the same name. "
            "Bastion scans every copy."
        ),
        example="Two `archive/data.pkl` entries, one benign and one with a payload.",
        use_instead=_RECREATE,
        references=_ZIP_REFS,
    )
)

ZIP_TRAILING = register(
    Rule(
        code="BST-ZIP-007",
        name="data-after-archive",
        severity=Severity.MEDIUM,
        summary="Bytes follow the end of a zip archive.",
        what_it_does="Reports bytes after the end-of-central-directory record and its comment.",
        why_bad=(
            "Readers that search for the end record from the end of the file can be steered to a different "
            "archive hidden in the trailing bytes, and such data is a common place to smuggle a second "
            "payload."
        ),
        example="A checkpoint with a pickle or a second archive appended after its end record.",
        use_instead=_RECREATE,
        false_positives="Some signing tools append a signature block; check where the extra bytes came from.",
        references=_ZIP_REFS,
    )
)

ZIP_OVERLAP = register(
    Rule(
        code="BST-ZIP-008",
        name="overlapping-members",
        severity=Severity.HIGH,
        summary="Two members of a zip archive share bytes.",
        what_it_does="Checks that each member's bytes end before the next member's local header begins.",
        why_bad=(
            "Overlapping members are how non-recursive zip bombs multiply their output, and they let one "
            "region of the file be read as two different members by different readers."
        ),
        example="A 'zip bomb' whose thousands of entries all point into one compressed kernel.",
        use_instead=_RECREATE,
        references=(*_ZIP_REFS, Reference("David Fifield, A better zip bomb (WOOT 2019)")),
    )
)

TORCH_MISSING_STORAGE = register(
    Rule(
        code="BST-TORCH-001",
        name="missing-storage",
        severity=Severity.LOW,
        summary="A PyTorch checkpoint's pickle refers to tensor storage that is not in the archive.",
        what_it_does=(
            "Collects the storage keys that `data.pkl` names in its persistent ids and checks that each has "
            "a `data/<key>` member."
        ),
        why_bad=(
            "`torch.load` fails on such a file, so it is broken or hand-edited; a hand-edited checkpoint "
            "deserves a look at what else was changed."
        ),
        example="`data.pkl` references storage `7` but the archive has no `archive/data/7`.",
        use_instead="Re-save the checkpoint with `torch.save`, or better, as safetensors.",
        false_positives="A checkpoint truncated in transit.",
        references=(OWASP_LLM03,),
    )
)
