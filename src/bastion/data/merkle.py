"""Merkle roots over SHA-256 digests, domain-separated as in RFC 6962 so a leaf can never pose as a node."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    """SHA-256 of ``0x00 || data``."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256 of ``0x01 || left || right``."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Root over ``leaves`` (raw leaf data): pairwise levels, an odd last node promoted unchanged.

    The empty tree's root is SHA-256 of the empty string, as in RFC 6962.
    """
    if not leaves:
        return hashlib.sha256(b"").digest()
    level = [leaf_hash(leaf) for leaf in leaves]
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def merkle_root_hex(hex_digests: Sequence[str]) -> str:
    """Root (hex) over a sequence of hex digests, each taken as its raw bytes."""
    return merkle_root([bytes.fromhex(h) for h in hex_digests]).hex()
