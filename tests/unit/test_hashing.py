from kvcache import block_hashes


def test_only_full_blocks() -> None:
    assert block_hashes(list(range(15)), block_size=16) == []
    assert len(block_hashes(list(range(33)), block_size=16)) == 2


def test_chained_prefix_property() -> None:
    a = block_hashes(list(range(64)), block_size=16)
    b = block_hashes([*range(48), 999, *range(49, 64)], block_size=16)
    assert a[:3] == b[:3]
    assert a[3] != b[3]


def test_scope_and_seed_separate() -> None:
    tokens = list(range(32))
    base = block_hashes(tokens)
    assert block_hashes(tokens, scope="adapter-a") != base
    assert block_hashes(tokens, seed=1) != base
    assert block_hashes(tokens) == base
