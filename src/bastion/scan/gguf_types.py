"""GGUF value types and ggml tensor types: the sizes a GGUF reader needs, as data."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence

MAX_DIMS = 4  # GGML_MAX_DIMS: llama.cpp refuses tensors with more dimensions
_MAX_ELEMENTS = (1 << 63) - 1  # ggml counts elements in int64


class ValueType(enum.IntEnum):
    """GGUF metadata value types (the specification's ``gguf_metadata_value_type``)."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


# Fixed-size value types and their sizes in bytes (STRING and ARRAY are variable).
VALUE_SIZES: Mapping[int, int] = {
    ValueType.UINT8: 1,
    ValueType.INT8: 1,
    ValueType.UINT16: 2,
    ValueType.INT16: 2,
    ValueType.UINT32: 4,
    ValueType.INT32: 4,
    ValueType.FLOAT32: 4,
    ValueType.BOOL: 1,
    ValueType.UINT64: 8,
    ValueType.INT64: 8,
    ValueType.FLOAT64: 8,
}

# ggml_type -> (elements per block, bytes per block), from ggml's type traits. Removed types
# (4, 5, 31-33, 36-38) are absent on purpose: current readers refuse them.
GGML_TYPES: Mapping[int, tuple[int, int]] = {
    0: (1, 4),  # F32
    1: (1, 2),  # F16
    2: (32, 18),  # Q4_0
    3: (32, 20),  # Q4_1
    6: (32, 22),  # Q5_0
    7: (32, 24),  # Q5_1
    8: (32, 34),  # Q8_0
    9: (32, 40),  # Q8_1
    10: (256, 84),  # Q2_K
    11: (256, 110),  # Q3_K
    12: (256, 144),  # Q4_K
    13: (256, 176),  # Q5_K
    14: (256, 210),  # Q6_K
    15: (256, 292),  # Q8_K
    16: (256, 66),  # IQ2_XXS
    17: (256, 74),  # IQ2_XS
    18: (256, 98),  # IQ3_XXS
    19: (256, 50),  # IQ1_S
    20: (32, 18),  # IQ4_NL
    21: (256, 110),  # IQ3_S
    22: (256, 82),  # IQ2_S
    23: (256, 136),  # IQ4_XS
    24: (1, 1),  # I8
    25: (1, 2),  # I16
    26: (1, 4),  # I32
    27: (1, 8),  # I64
    28: (1, 8),  # F64
    29: (256, 56),  # IQ1_M
    30: (1, 2),  # BF16
    34: (256, 54),  # TQ1_0
    35: (256, 66),  # TQ2_0
    39: (32, 17),  # MXFP4
    40: (64, 36),  # NVFP4
    41: (128, 18),  # Q1_0
}


def array_min_size(element_type: int, len_size: int) -> int:
    """The fewest bytes one array element of ``element_type`` can take (to bound announced counts)."""
    if element_type in VALUE_SIZES:
        return VALUE_SIZES[element_type]
    if element_type == ValueType.STRING:
        return len_size
    if element_type == ValueType.ARRAY:
        return 4 + len_size
    return 1


def tensor_nbytes(ggml_type: int, dims: Sequence[int]) -> int | None:
    """Bytes of a tensor of ``ggml_type`` and shape ``dims``, or None if unknown or impossible."""
    traits = GGML_TYPES.get(ggml_type)
    if traits is None:
        return None
    block, block_bytes = traits
    if dims and dims[0] % block:
        return None
    count = 1
    for dim in dims:
        count *= dim
        if count > _MAX_ELEMENTS:
            return None
    return count // block * block_bytes
