"""Benign samples of every format, written by the real libraries the way users produce them."""

from __future__ import annotations

import collections
import io
import json
import pickle
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from corpus_archives import benign_torch_zip
from corpus_formats import (
    DT_FLOAT,
    attr_entry,
    dense,
    gguf_file,
    keras_zip,
    node,
    pb_int,
    saved_model,
    sequential,
    write_savedmodel,
)
from corpus_pickles import write
from corpus_registry import benign

if TYPE_CHECKING:
    import onnx

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)


@cache
def torchscript_bytes() -> bytes:
    """A real ``torch.jit.script`` archive of a tiny module."""
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.fc(x))

    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(Tiny()), buf)
    return buf.getvalue()


@cache
def safetensors_bytes() -> bytes:
    """A real safetensors file (via safetensors.numpy)."""
    import numpy as np
    from safetensors.numpy import save

    return save({"weight": np.ones((4, 2), dtype=np.float32), "bias": np.zeros(2, dtype=np.float32)})


def _sklearn_pipeline() -> object:
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4))
    y = (x[:, 0] > 0).astype(int)
    return Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())]).fit(x, y)


def _onnx_mlp() -> onnx.ModelProto:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w1 = numpy_helper.from_array(np.ones((4, 8), dtype=np.float32) * 0.1, "W1")
    w2 = numpy_helper.from_array(np.ones((8, 2), dtype=np.float32) * 0.1, "W2")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W1"], ["h"]),
            helper.make_node("Relu", ["h"], ["hr"]),
            helper.make_node("MatMul", ["hr", "W2"], ["y"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [w1, w2],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="bastion-bench"
    )
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


@benign("benign-torch-zip", "torch-zip", "torch.save state dict (zip format)")
def _torch_zip(out: Path) -> Path:
    import torch

    path = out / "benign_state.pt"
    torch.save(
        torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).state_dict(), path
    )
    return path


@benign("benign-torch-legacy", "torch-legacy", "torch.save state dict (legacy format)")
def _torch_legacy(out: Path) -> Path:
    import torch

    path = out / "benign_legacy.pt"
    torch.save(torch.nn.Linear(4, 2).state_dict(), path, _use_new_zipfile_serialization=False)
    return path


@benign("benign-torch-checkpoint", "torch-zip", "training checkpoint: state dict, optimizer, epoch")
def _torch_ckpt(out: Path) -> Path:
    import torch

    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    path = out / "benign_checkpoint.ckpt"
    torch.save({"epoch": 3, "model": model.state_dict(), "optimizer": opt.state_dict(), "loss": 0.25}, path)
    return path


@benign("benign-torchscript", "torchscript", "torch.jit.script module")
def _torchscript(out: Path) -> Path:
    return write(out, "benign_script.pt", torchscript_bytes())


@benign("benign-sklearn-joblib", "joblib", "sklearn pipeline, joblib.dump compress=0")
def _joblib0(out: Path) -> Path:
    import joblib

    path = out / "benign_pipeline.joblib"
    joblib.dump(_sklearn_pipeline(), path, compress=0)
    return path


@benign("benign-sklearn-joblib-z3", "joblib", "sklearn pipeline, joblib.dump compress=3")
def _joblib3(out: Path) -> Path:
    import joblib

    path = out / "benign_pipeline_z3.joblib"
    joblib.dump(_sklearn_pipeline(), path, compress=3)
    return path


@benign("benign-npy", "numpy", "numpy.save of a float array")
def _npy(out: Path) -> Path:
    import numpy as np

    path = out / "benign.npy"
    np.save(path, np.arange(12, dtype=np.float32).reshape(3, 4))
    return path


@benign("benign-npz", "numpy", "numpy.savez_compressed of two arrays")
def _npz(out: Path) -> Path:
    import numpy as np

    path = out / "benign.npz"
    np.savez_compressed(path, a=np.zeros(8), b=np.arange(5))
    return path


@benign("benign-hdf5", "hdf5", "Keras-free HDF5 with datasets and attributes")
def _hdf5(out: Path) -> Path:
    import h5py
    import numpy as np

    path = out / "benign.h5"
    with h5py.File(path, "w") as fh:
        fh.create_dataset("layer0/kernel", data=np.ones((4, 2), dtype=np.float32))
        fh.attrs["description"] = "plain arrays"
    return path


@benign("benign-keras", "keras", "Keras 3 .keras with Dense layers and weights")
def _keras(out: Path) -> Path:
    import h5py
    import numpy as np

    buf = io.BytesIO()
    with h5py.File(buf, "w") as fh:
        fh.create_dataset("layers/dense/vars/0", data=np.ones((4, 2), dtype=np.float32))
        fh.create_dataset("layers/dense/vars/1", data=np.zeros(2, dtype=np.float32))
    config = sequential(dense("dense", 2))
    return write(out, "benign.keras", keras_zip(config, buf.getvalue()))


@benign("benign-onnx", "onnx", "two-layer MLP built with onnx.helper")
def _onnx(out: Path) -> Path:
    import onnx

    path = out / "benign_mlp.onnx"
    onnx.save_model(_onnx_mlp(), path)
    return path


@benign("benign-onnx-external", "onnx", "MLP saved with external data next to the model")
def _onnx_ext(out: Path) -> Path:
    import onnx

    root = out / "onnx-external"
    root.mkdir(parents=True, exist_ok=True)
    path = root / "model.onnx"
    onnx.save_model(
        _onnx_mlp(),
        path,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    return path


@benign("benign-safetensors", "safetensors", "safetensors.numpy.save_file")
def _safetensors(out: Path) -> Path:
    import numpy as np
    from safetensors.numpy import save_file

    path = out / "benign.safetensors"
    save_file({"weight": np.ones((4, 2), dtype=np.float32)}, path, metadata={"format": "np"})
    return path


@benign("benign-gguf", "gguf", "GGUF with a ChatML chat template")
def _gguf(out: Path) -> Path:
    return gguf_file(out / "benign_chatml.gguf", CHATML_TEMPLATE)


@benign("benign-gguf-llama3", "gguf", "GGUF with a Llama-3 style chat template")
def _gguf3(out: Path) -> Path:
    return gguf_file(out / "benign_llama3.gguf", LLAMA3_TEMPLATE)


@benign("benign-hf-folder", "hf-folder", "HF folder: config.json without auto_map, safetensors weights")
def _hf(out: Path) -> Path:
    root = out / "hf-benign"
    root.mkdir(parents=True, exist_ok=True)
    config = {"architectures": ["BertModel"], "model_type": "bert", "hidden_size": 4, "num_hidden_layers": 1}
    (root / "config.json").write_text(json.dumps(config, indent=2))
    (root / "generation_config.json").write_text(json.dumps({"max_new_tokens": 32, "do_sample": False}))
    (root / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 512, "do_lower_case": True}))
    (root / "README.md").write_text("# tiny-bert\n\nA test model.\n")
    # Many repos ship helper scripts; one starting with "import" must not be mistaken for a pickle.
    script = 'import os\n\nos.environ.setdefault("TOKENIZERS_PARALLELISM", "false")\nprint(os.listdir())\n'
    (root / "convert_weights.py").write_text(script)
    (root / "model.safetensors").write_bytes(safetensors_bytes())
    return root


@benign("benign-savedmodel", "savedmodel", "SavedModel graph of Placeholder, MatMul, Identity")
def _savedmodel(out: Path) -> Path:
    dtype = attr_entry("dtype", pb_int(6, DT_FLOAT))
    nodes = [
        node("x", "Placeholder", attrs=(dtype,)),
        node("w", "VarHandleOp", attrs=(dtype,)),
        node("w/read", "ReadVariableOp", ("w",), attrs=(attr_entry("dtype", pb_int(6, DT_FLOAT)),)),
        node("y", "MatMul", ("x", "w/read")),
        node("out", "Identity", ("y",)),
    ]
    return write_savedmodel(out, "savedmodel-benign", saved_model(nodes))


def _register_plain_pickles() -> None:
    """One benign pickle per protocol 0..5 of dicts, lists and an OrderedDict."""
    for protocol in range(6):

        def build(out: Path, protocol: int = protocol) -> Path:
            data = {
                "name": "bastion",
                "values": [1, 2.5, None, True, "x" * 10],
                "nested": collections.OrderedDict(a=1, b=[1, 2, 3]),
                "tuple": (1, 2),
                "blob": b"\x00\x01" * 8,
            }
            return write(out, f"benign_p{protocol}.pkl", pickle.dumps(data, protocol=protocol))

        benign(f"benign-pickle-p{protocol}", "pickle", f"plain pickle, protocol {protocol}")(build)


def _register_benign_torch_zip_bytes() -> None:
    """The cached torch zip used inside the malicious samples, on its own: it must stay clean."""

    def build(out: Path) -> Path:
        return write(out, "benign_tiny.pt", benign_torch_zip())

    benign("benign-torch-zip-tiny", "torch-zip", "the base checkpoint the torch-zip attacks start from")(
        build
    )


_register_plain_pickles()
_register_benign_torch_zip_bytes()
