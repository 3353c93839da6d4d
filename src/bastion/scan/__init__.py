"""Model-artifact scanning: find code that runs when a model file is loaded, without loading it.

Importing this package registers every format scanner and its rules. The entry point is
:func:`scan_paths`.
"""

from __future__ import annotations

# Each module below registers its scanners and rules when imported; the order does not matter.
from bastion.scan import (  # noqa: F401
    archives,
    core_rules,
    gguf_scan,
    hdf5_scan,
    hf_folder,
    keras_config,
    numpy_scan,
    onnx_scan,
    pickle_scan,
    safetensors_scan,
    savedmodel,
    torch_legacy,
    zip_scan,
)
from bastion.scan.engine import ScanOptions, scan_paths

__all__ = ["ScanOptions", "scan_paths"]
