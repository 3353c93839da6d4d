"""Artifact identity: digests equal model-signing's subject digest; format detection never loads a file."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pickle
import stat
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bastion.errors import InputError
from bastion.registry.artifacts import detect_format, hash_artifact, list_files

MODEL_SIGNING = Path(sys.executable).parent / "model_signing"


def safetensors_bytes(metadata: dict[str, str] | None = None, n: int = 64) -> bytes:
    """A valid safetensors file with one float32 tensor of ``n`` values."""
    header: dict[str, object] = {"w": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}}
    if metadata is not None:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + bytes(range(256)) * (n // 64)


def make_model(root: Path) -> Path:
    """A small Hugging Face-like model directory, with git metadata that must not count."""
    (root / "weights").mkdir(parents=True)
    (root / "weights" / "model.safetensors").write_bytes(safetensors_bytes({"format": "pt"}, n=1024))
    (root / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "hidden_size": 8}))
    (root / "tokenizer.json").write_text('{"version": "1.0"}')
    (root / "__init__.py").write_bytes(b"")  # zero-length files are part of the identity
    # "a/b" sorts before "a-c" by path components but after it as a string.
    (root / "a").mkdir()
    (root / "a" / "b").write_bytes(b"b")
    (root / "a-c").write_bytes(b"c")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    return root


def bundle_payload(signature: Path) -> dict[str, object]:
    bundle = json.loads(signature.read_text())
    payload: dict[str, object] = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    return payload


def subject_digest(signature: Path) -> str:
    subject = bundle_payload(signature)["subject"]
    assert isinstance(subject, list)
    return "sha256:" + subject[0]["digest"]["sha256"]


@pytest.fixture(scope="module")
def ec_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bastion.registry.signing import generate_key

    key = tmp_path_factory.mktemp("keys") / "key.pem"
    generate_key(key)
    return key


def test_digest_equals_model_signing_cli_subject_digest(tmp_path: Path, ec_key: Path) -> None:
    model = make_model(tmp_path / "model")
    ours = hash_artifact(model)
    result = subprocess.run(
        [str(MODEL_SIGNING), "sign", "key", str(model), "--private_key", str(ec_key), "--signature",
         str(model / "model.sig")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert ours.digest == subject_digest(model / "model.sig")
    # The bundle's per-file resources are exactly our files, in the same order.
    resources = bundle_payload(model / "model.sig")["predicate"]["resources"]  # type: ignore[index]
    assert [(r["name"], r["digest"]) for r in resources] == [(f.path, f.sha256) for f in ours.files]
    # Signing wrote model.sig into the directory; the identity did not change.
    assert hash_artifact(model).digest == ours.digest


def test_digest_equals_model_signing_api_for_a_single_file(tmp_path: Path, ec_key: Path) -> None:
    import model_signing

    weights = tmp_path / "model.safetensors"
    weights.write_bytes(safetensors_bytes(n=256))
    signature = tmp_path / "model.safetensors.sig"
    model_signing.signing.Config().use_elliptic_key_signer(private_key=ec_key).sign(weights, signature)
    digest = hash_artifact(weights)
    assert digest.digest == subject_digest(signature)
    assert [(f.path, f.size) for f in digest.files] == [("model.safetensors", weights.stat().st_size)]
    assert digest.files[0].sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert not digest.is_dir
    assert digest.name == "model.safetensors"


def test_files_sizes_order_and_root_digest(tmp_path: Path) -> None:
    model = make_model(tmp_path / "m")
    digest = hash_artifact(model)
    paths = [f.path for f in digest.files]
    assert paths == [
        "__init__.py",
        "a/b",
        "a-c",
        "config.json",
        "tokenizer.json",
        "weights/model.safetensors",
    ]
    for f in digest.files:
        data = (model / f.path).read_bytes()
        assert (f.sha256, f.size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert digest.size == sum(f.size for f in digest.files)
    concatenated = b"".join(bytes.fromhex(f.sha256) for f in digest.files)
    assert digest.digest == "sha256:" + hashlib.sha256(concatenated).hexdigest()
    assert digest.is_dir


def test_digest_changes_with_content_and_ignores_git_and_signature(tmp_path: Path) -> None:
    model = make_model(tmp_path / "m")
    before = hash_artifact(model).digest
    (model / ".git" / "HEAD").write_text("ref: refs/heads/other\n")
    (model / "model.sig").write_text("{}")
    assert hash_artifact(model).digest == before
    (model / "notes.sig").write_text("{}")
    assert hash_artifact(model).digest != before
    assert hash_artifact(model, ignore=["notes.sig"]).digest == before
    (model / "config.json").write_text(json.dumps({"architectures": ["GPT2"]}))
    assert hash_artifact(model, ignore=["notes.sig"]).digest != before


def test_ignore_must_be_relative(tmp_path: Path) -> None:
    model = make_model(tmp_path / "m")
    with pytest.raises(InputError, match="relative to the artifact root"):
        hash_artifact(model, ignore=["../elsewhere"])


def test_symlinks_are_refused_naming_the_path(tmp_path: Path) -> None:
    model = make_model(tmp_path / "m")
    (model / "weights" / "alias.safetensors").symlink_to(model / "weights" / "model.safetensors")
    with pytest.raises(InputError, match=r"alias\.safetensors: is a symbolic link"):
        hash_artifact(model)
    link = tmp_path / "link"
    link.symlink_to(model, target_is_directory=True)
    with pytest.raises(InputError, match=r"link: is a symbolic link"):
        hash_artifact(link)


def test_missing_empty_and_special_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope: no such file or directory"):
        hash_artifact(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=r"empty: empty directory"):
        hash_artifact(empty)
    only_git = tmp_path / "only_git"
    (only_git / ".git").mkdir(parents=True)
    (only_git / ".git" / "HEAD").write_text("x")
    with pytest.raises(InputError, match="empty directory"):
        hash_artifact(only_git)
    special = tmp_path / "special"
    special.mkdir()
    (special / "w.bin").write_bytes(b"w")
    os.mkfifo(special / "pipe")
    with pytest.raises(InputError, match=r"pipe: not a regular file"):
        hash_artifact(special)
    with pytest.raises(InputError) as info:
        list_files(tmp_path / "nope")
    assert "\n" not in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path: Path) -> None:
    model = make_model(tmp_path / "m")
    secret = model / "config.json"
    secret.chmod(0)
    try:
        with pytest.raises(InputError, match=r"config\.json: cannot read"):
            hash_artifact(model)
    finally:
        secret.chmod(stat.S_IRUSR | stat.S_IWUSR)


# --- format detection -------------------------------------------------------------------------------------


def test_transformers_safetensors_directory(tmp_path: Path) -> None:
    assert detect_format(make_model(tmp_path / "m")) == ("safetensors", "transformers")


def test_safetensors_framework_from_metadata_only_without_architectures(tmp_path: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "model.safetensors").write_bytes(safetensors_bytes({"format": "pt"}))
    (model / "config.json").write_text('{"hidden_size": 8}')
    assert detect_format(model) == ("safetensors", "pytorch")
    bare = tmp_path / "bare.safetensors"
    bare.write_bytes(safetensors_bytes())
    assert detect_format(bare) == ("safetensors", None)


def test_pytorch_zip_checkpoint(tmp_path: Path) -> None:
    # The layout torch.save writes: <name>/data.pkl, <name>/data/<storage>, <name>/version.
    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model/data.pkl", pickle.dumps({"w": 1}, protocol=2))
        archive.writestr("model/data/0", b"\0" * 16)
        archive.writestr("model/version", "3\n")
    assert detect_format(path) == ("pytorch", "pytorch")


def test_keras_zip_and_numpy(tmp_path: Path) -> None:
    import numpy as np

    keras = tmp_path / "model.keras"
    with zipfile.ZipFile(keras, "w") as archive:
        archive.writestr("config.json", '{"class_name": "Sequential"}')
        archive.writestr("metadata.json", '{"keras_version": "3.0.0"}')
        archive.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n")
    assert detect_format(keras) == ("keras", "keras")
    npy = tmp_path / "w.npy"
    np.save(npy, np.zeros(4))
    assert detect_format(npy) == ("numpy", None)


def test_scikit_learn_pickles_and_joblib_without_loading(tmp_path: Path) -> None:
    import joblib
    from sklearn.linear_model import LogisticRegression

    estimator = LogisticRegression()
    for protocol in (2, 4, 5):
        path = tmp_path / f"model{protocol}.pkl"
        path.write_bytes(pickle.dumps(estimator, protocol=protocol))
        assert detect_format(path) == ("pickle", "scikit-learn")
    joblib.dump(estimator, tmp_path / "plain.joblib")
    assert detect_format(tmp_path / "plain.joblib") == ("pickle", "scikit-learn")
    joblib.dump(estimator, tmp_path / "zlib.joblib", compress=3)
    assert detect_format(tmp_path / "zlib.joblib") == ("pickle", "scikit-learn")
    joblib.dump(estimator, tmp_path / "xz.joblib", compress=("xz", 3))
    assert detect_format(tmp_path / "xz.joblib") == ("pickle", "scikit-learn")
    (tmp_path / "dict.pkl").write_bytes(pickle.dumps({"weights": [1.0, 2.0]}))
    assert detect_format(tmp_path / "dict.pkl") == ("pickle", None)


def test_detection_never_runs_a_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    # GLOBAL os.system + REDUCE: unpickling this would create the marker file.
    payload = b"cos\nsystem\n(V touch " + str(marker).encode() + b"\ntR."
    path = tmp_path / "evil.pkl"
    path.write_bytes(payload)
    assert detect_format(path) == ("pickle", None)
    assert not marker.exists()


def test_onnx_gguf_savedmodel_and_plain_directories(tmp_path: Path) -> None:
    onnx = tmp_path / "model.onnx"
    producer = b"pytorch"
    onnx.write_bytes(b"\x08\x07\x12" + bytes([len(producer)]) + producer + b"\x1a\x032.1" + b"\0" * 32)
    assert detect_format(onnx) == ("onnx", "pytorch")
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 0))
    assert detect_format(gguf) == ("gguf", None)
    saved = tmp_path / "saved"
    (saved / "variables").mkdir(parents=True)
    (saved / "saved_model.pb").write_bytes(b"\x08\x01")
    (saved / "variables" / "variables.index").write_bytes(b"\0" * 8)
    assert detect_format(saved) == ("savedmodel", "tensorflow")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "README.md").write_text("# model\n")
    assert detect_format(docs) == ("directory", None)


def test_dominant_weight_format_wins_in_a_directory(tmp_path: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "model.safetensors").write_bytes(safetensors_bytes(n=4096))
    (model / "training_args.bin").write_bytes(pickle.dumps({"lr": 0.1}, protocol=2))
    assert detect_format(model)[0] == "safetensors"


def test_detect_format_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        detect_format(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="empty directory"):
        detect_format(empty)
