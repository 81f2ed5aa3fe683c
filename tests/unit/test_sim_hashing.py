"""engine_sim's block hashes are vLLM's ``sha256_cbor`` exactly (checked against the reference encoder)."""

import hashlib

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine_sim.hashing import BlockHasher, as_int, block_digest, cbor_dumps, none_hash

cbor_values = st.recursive(
    st.none() | st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=5).map(tuple),
    max_leaves=20,
)


@given(cbor_values)
def test_cbor_matches_cbor2_canonical(value: object) -> None:
    assert cbor_dumps(value) == cbor2.dumps(value, canonical=True)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "tokens",
    [list(range(16)), [0] * 16, [128000, *range(1, 16)], [2**32 - 1] * 16],
    ids=["small", "zeros", "bos", "max"],
)
def test_block_digest_is_vllm_sha256_cbor(tokens: list[int]) -> None:
    root = none_hash(0)
    assert root == hashlib.sha256(cbor2.dumps("0", canonical=True)).digest()  # PYTHONHASHSEED=0
    expected = hashlib.sha256(cbor2.dumps((root, tuple(tokens), None), canonical=True)).digest()
    assert block_digest(root, tokens, None) == expected
    extra = ("adapter-a",)
    assert (
        block_digest(root, tokens, extra)
        == hashlib.sha256(cbor2.dumps((root, tuple(tokens), extra), canonical=True)).digest()
    )


def test_hasher_chains_and_publishes_low_64_bits() -> None:
    hasher = BlockHasher(none_hash(7), 4, None, None)
    hasher.extend(list(range(10)))  # two full blocks, the partial third is not hashed
    assert len(hasher.hashes) == 2
    first = block_digest(none_hash(7), [0, 1, 2, 3], None)
    second = block_digest(first, [4, 5, 6, 7], None)
    assert hasher.hashes == [as_int(first), as_int(second)]
    assert hasher.hashes[1] == int.from_bytes(second, "big") & (2**64 - 1)
