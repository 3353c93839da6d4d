"""Merkle roots: known answers computed by hand from the RFC 6962 construction."""

from __future__ import annotations

import hashlib

from bastion.data.merkle import merkle_root, merkle_root_hex


def h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def test_empty_tree_is_hash_of_empty_string() -> None:
    assert merkle_root([]).hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_single_leaf_is_leaf_hash() -> None:
    assert merkle_root([b"a"]) == h(b"\x00a")


def test_three_leaves_promote_the_odd_node() -> None:
    la, lb, lc = h(b"\x00a"), h(b"\x00b"), h(b"\x00c")
    expected = h(b"\x01" + h(b"\x01" + la + lb) + lc)
    assert merkle_root([b"a", b"b", b"c"]) == expected


def test_known_answer_hex() -> None:
    # sha256(0x01 || sha256(0x00 'a') || sha256(0x00 'b')), computed independently with hashlib by hand.
    la = bytes.fromhex("022a6979e6dab7aa5ae4c3e5e45f7e977112a7e63593820dbec1ec738a24f93c")
    lb = bytes.fromhex("57eb35615d47f34ec714cacdf5fd74608a5e8e102724e80b24b287c0c27b6a31")
    assert h(b"\x00a") == la
    assert h(b"\x00b") == lb
    assert merkle_root([b"a", b"b"]) == h(b"\x01" + la + lb)


def test_leaf_and_node_are_domain_separated() -> None:
    # Without prefixes, a two-leaf tree's root would equal the hash of the concatenated leaves.
    a, b = h(b"a"), h(b"b")
    assert merkle_root([a, b]) != merkle_root([a + b])


def test_order_matters_and_hex_wrapper() -> None:
    a, b = h(b"a").hex(), h(b"b").hex()
    assert merkle_root_hex([a, b]) != merkle_root_hex([b, a])
    assert merkle_root_hex([a, b]) == merkle_root([bytes.fromhex(a), bytes.fromhex(b)]).hex()


def test_three_leaf_root_constant() -> None:
    # Hand computation: H(01 || H(01 || H(00 a) || H(00 b)) || H(00 c)), c promoted unchanged.
    expected = "36642e73c2540ab121e3a6bf9545b0a24982cd830eb13d3cd19de3ce6c021ec1"
    assert merkle_root([b"a", b"b", b"c"]).hex() == expected
