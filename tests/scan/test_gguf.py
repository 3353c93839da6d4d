"""GGUF scanner: gguf-py files are clean; SSTI templates, crafted structure and truncation are not."""

from __future__ import annotations

import functools
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.findings import Severity, Verdict
from bastion.scan import ScanOptions, scan_paths
from bastion.scan.engine import scan_file

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SSTI = (
    "{% for m in messages %}{{ m.content }}{% endfor %}"
    "{{ cycler.__init__.__globals__.os.popen('echo bastion-test').read() }}"
)
OBFUSCATED = (
    "{% set u = '_' * 2 %}{% set g = u ~ 'glo' ~ 'bals' ~ u %}"
    "{{ (lipsum|attr(g))['o' ~ 's'] }}{{ messages[0].content }}"
)


def build(
    path: Path,
    template: str | None = CHATML,
    extra: Callable[[gguf.GGUFWriter], None] | None = None,
    endian: gguf.GGUFEndian = gguf.GGUFEndian.LITTLE,
) -> Path:
    writer = gguf.GGUFWriter(str(path), "llama", endianess=endian)
    writer.add_block_count(2)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(["<s>", "</s>", "<|im_start|>", "hello"])
    writer.add_token_scores([0.0, 0.0, 0.0, -1.5])
    if template is not None:
        writer.add_chat_template(template)
    if extra is not None:
        extra(writer)
    writer.add_tensor("token_embd.weight", np.ones((4, 8), np.float32))
    writer.add_tensor("output_norm.weight", np.ones((32,), np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def scan(path: Path) -> tuple[list[tuple[str, Severity]], Verdict]:
    report = scan_paths([str(path)], ScanOptions(jobs=1))
    return [(f.rule_id, f.severity) for f in report.findings], report.targets[0].verdict


def kv_string(key: str, value: str) -> bytes:
    k, v = key.encode(), value.encode()
    return struct.pack("<Q", len(k)) + k + struct.pack("<I", 8) + struct.pack("<Q", len(v)) + v


def raw_gguf(kvs: list[bytes], n_tensors: int = 0, tail: bytes = b"") -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, len(kvs)) + b"".join(kvs) + tail


def test_benign_writer_file_is_clean(tmp_path: Path) -> None:
    findings, verdict = scan(build(tmp_path / "model.gguf"))
    assert findings == []
    assert verdict is Verdict.CLEAN


def test_big_endian_file_is_read(tmp_path: Path) -> None:
    assert scan(build(tmp_path / "be.gguf", endian=gguf.GGUFEndian.BIG)) == ([], Verdict.CLEAN)
    findings, _ = scan(build(tmp_path / "be-ssti.gguf", template=SSTI, endian=gguf.GGUFEndian.BIG))
    assert ("BST-TPL-001", Severity.CRITICAL) in findings


def test_named_templates_and_vocab_only_file_are_clean(tmp_path: Path) -> None:
    def named(writer: gguf.GGUFWriter) -> None:
        writer.add_chat_template(
            [{"name": "default", "template": CHATML}, {"name": "tool_use", "template": CHATML}]
        )

    findings, _ = scan(build(tmp_path / "named.gguf", template=None, extra=named))
    assert findings == []
    vocab_only = tmp_path / "vocab.gguf"
    vocab_only.write_bytes(raw_gguf([kv_string("tokenizer.chat_template", CHATML)]))
    assert scan(vocab_only) == ([], Verdict.CLEAN)


def test_ssti_template_is_critical(tmp_path: Path) -> None:
    findings, verdict = scan(build(tmp_path / "ssti.gguf", template=SSTI))
    assert ("BST-TPL-001", Severity.CRITICAL) in findings
    assert ("BST-TPL-004", Severity.CRITICAL) in findings
    assert verdict is Verdict.MALICIOUS


def test_obfuscated_ssti_is_critical(tmp_path: Path) -> None:
    findings, verdict = scan(build(tmp_path / "obf.gguf", template=OBFUSCATED))
    assert ("BST-TPL-002", Severity.CRITICAL) in findings
    assert verdict is Verdict.MALICIOUS


def test_named_template_with_ssti_is_found(tmp_path: Path) -> None:
    def named(writer: gguf.GGUFWriter) -> None:
        writer.add_chat_template([{"name": "default", "template": CHATML}, {"name": "rag", "template": SSTI}])

    report = scan_paths([str(build(tmp_path / "n.gguf", template=None, extra=named))], ScanOptions(jobs=1))
    keys = {f.evidence_map.get("key") for f in report.findings if f.rule_id.startswith("BST-TPL")}
    assert keys == {"tokenizer.chat_template.rag"}


def test_duplicate_template_key_is_high(tmp_path: Path) -> None:
    path = tmp_path / "dup.gguf"
    path.write_bytes(
        raw_gguf([kv_string("tokenizer.chat_template", CHATML), kv_string("tokenizer.chat_template", CHATML)])
    )
    assert scan(path)[0] == [("BST-GGUF-004", Severity.HIGH)]


def nested_array(depth: int) -> bytes:
    key = b"evil.nested"
    body = struct.pack("<IQ", 0, 0)  # innermost: an empty UINT8 array
    for _ in range(depth - 1):
        body = struct.pack("<IQ", 9, 1) + body
    return struct.pack("<Q", len(key)) + key + struct.pack("<I", 9) + body


def test_deeply_nested_arrays_are_reported_without_crashing(tmp_path: Path) -> None:
    path = tmp_path / "deep.gguf"
    path.write_bytes(raw_gguf([nested_array(5000), kv_string("tokenizer.chat_template", SSTI)]))
    findings, verdict = scan(path)
    assert ("BST-GGUF-003", Severity.HIGH) in findings
    # The walk went on past the nested value and still checked the template.
    assert ("BST-TPL-001", Severity.CRITICAL) in findings
    assert verdict is Verdict.MALICIOUS


def test_shallow_nesting_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "shallow.gguf"
    path.write_bytes(raw_gguf([nested_array(3)]))
    assert scan(path)[0] == []


def test_truncated_file_is_incomplete(tmp_path: Path) -> None:
    data = build(tmp_path / "full.gguf").read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[:200])
    findings, verdict = scan(cut)
    assert findings == [("BST-SCAN-001", Severity.HIGH)]
    assert verdict is Verdict.ERROR


def test_crafted_counts_and_version(tmp_path: Path) -> None:
    path = tmp_path / "counts.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1 << 40) + b"\0" * 64)
    assert scan(path)[0] == [("BST-GGUF-001", Severity.HIGH)]
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 9, 0, 0))
    assert scan(path)[0] == [("BST-GGUF-001", Severity.HIGH)]


def test_unknown_value_type_is_reported_and_incomplete(tmp_path: Path) -> None:
    path = tmp_path / "type.gguf"
    path.write_bytes(raw_gguf([struct.pack("<Q", 1) + b"k" + struct.pack("<I", 13) + b"\0" * 16]))
    rules = {r for r, _ in scan(path)[0]}
    assert rules == {"BST-GGUF-002", "BST-SCAN-001"}


def tensor_info(name: str, dims: list[int], ggml_type: int, offset: int) -> bytes:
    n = name.encode()
    return (
        struct.pack("<Q", len(n))
        + n
        + struct.pack("<I", len(dims))
        + struct.pack(f"<{len(dims)}Q", *dims)
        + struct.pack("<IQ", ggml_type, offset)
    )


def with_tensors(infos: list[bytes], data_size: int, alignment: int = 32) -> bytes:
    head = raw_gguf([], n_tensors=len(infos)) + b"".join(infos)
    pad = -len(head) % alignment
    return head + b"\0" * pad + b"\0" * data_size


def test_tensor_layout_checks(tmp_path: Path) -> None:
    path = tmp_path / "t.gguf"
    path.write_bytes(with_tensors([tensor_info("a", [8], 0, 0), tensor_info("b", [8], 0, 32)], 64))
    assert scan(path)[0] == []
    path.write_bytes(with_tensors([tensor_info("a", [8], 0, 0), tensor_info("b", [8], 0, 16)], 64))
    assert ("BST-GGUF-007", Severity.HIGH) in scan(path)[0]
    path.write_bytes(with_tensors([tensor_info("a", [8], 0, 0), tensor_info("b", [8], 0, 1 << 40)], 64))
    assert ("BST-GGUF-006", Severity.HIGH) in scan(path)[0]
    path.write_bytes(with_tensors([tensor_info("a", [8], 0, 4)], 64))
    assert ("BST-GGUF-008", Severity.MEDIUM) in scan(path)[0]
    path.write_bytes(with_tensors([tensor_info("a", [8, 1, 1, 1, 1], 0, 0)], 32))
    assert ("BST-GGUF-005", Severity.HIGH) in scan(path)[0]
    path.write_bytes(with_tensors([tensor_info("a", [8], 99, 0)], 32))
    assert ("BST-GGUF-005", Severity.HIGH) in scan(path)[0]
    path.write_bytes(with_tensors([tensor_info("a", [8], 0, 0), tensor_info("a", [8], 0, 32)], 64))
    assert ("BST-GGUF-004", Severity.HIGH) in scan(path)[0]


def test_appended_pickle_is_scanned(tmp_path: Path) -> None:
    path = tmp_path / "poly.gguf"
    path.write_bytes(with_tensors([tensor_info("a", [8], 0, 0)], 32) + b"\x80\x04\x95" + b"\0" * 64)
    findings = scan(path)[0]
    assert ("BST-GGUF-008", Severity.LOW) in findings


@functools.cache
def _seed() -> bytes:
    with tempfile.TemporaryDirectory() as d:
        return build(Path(d) / "seed.gguf", template=SSTI).read_bytes()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_truncated_and_mutated_files(tmp_path: Path, data: st.DataObject) -> None:
    seed = _seed()
    cut = data.draw(st.integers(0, len(seed)))
    blob = bytearray(seed[:cut])
    for _ in range(data.draw(st.integers(0, 6))):
        if blob:
            blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    path = tmp_path / "fuzz.gguf"
    path.write_bytes(bytes(blob))
    result = scan_file(path, "fuzz.gguf", ScanOptions(jobs=1))
    # Findings only: no scanner error in the GGUF scanner itself (nested trailing bytes belong to others).
    mine = [f for f in result.findings if not f.location.members]
    assert not any("scanner error" in f.message for f in mine), [f.message for f in mine]
