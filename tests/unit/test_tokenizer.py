import pytest

from flotilla.tokenizer import (
    BOS,
    END_HEADER,
    EOT,
    HASHED_BASE,
    SPACED_WORD_BASE,
    START_HEADER,
    FlotillaTokenizer,
    synthetic_ids,
    synthetic_text,
)

tok = FlotillaTokenizer()


# Documented test vectors: change them only with a new tokenizer name.
@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("ba", [SPACED_WORD_BASE + 10100]),  # bare "ba" is the first bare word
        (" ba", [SPACED_WORD_BASE]),
        (" ka zu", [SPACED_WORD_BASE + 35, SPACED_WORD_BASE + 99]),
        ("a", [97]),
        ("\n\n", [10, 10]),
    ],
    ids=["bare-word", "spaced-word", "two-words", "byte", "newlines"],
)
def test_vectors(text: str, ids: list[int]) -> None:
    assert tok.encode(text) == ids
    assert tok.decode(ids) == text


def test_synthetic_roundtrip() -> None:
    ids = synthetic_ids(seed=7, count=2048)
    assert tok.encode(synthetic_text(ids)) == ids
    assert synthetic_ids(seed=7, count=5) == ids[:5]
    assert synthetic_ids(seed=8, count=5) != ids[:5]


def test_english_is_about_a_token_per_word() -> None:
    text = "Hello there, General Kenobi! You are a bold one."
    ids = tok.encode(text)
    assert 10 <= len(ids) <= 14
    assert all(0 <= i < BOS for i in ids)
    assert any(i >= HASHED_BASE for i in ids)
    assert tok.encode(text) == ids  # deterministic


def test_chat_template_layout() -> None:
    ids = tok.encode_chat(
        [{"role": "system", "content": " ba"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    )
    assert ids[0] == BOS
    assert ids.count(START_HEADER) == 3  # two messages + generation prompt
    assert ids.count(EOT) == 2
    assert ids[-3:] == [END_HEADER, 10, 10]


def test_shared_system_prompt_gives_shared_prefix() -> None:
    system = synthetic_text(synthetic_ids(1, 500))
    a = tok.encode_chat([{"role": "system", "content": system}, {"role": "user", "content": "one"}])
    b = tok.encode_chat([{"role": "system", "content": system}, {"role": "user", "content": "two"}])
    common = next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)
    assert common > 500


def test_prompt_adds_bos() -> None:
    assert tok.encode_prompt("a") == [BOS, 97]
    assert tok.encode_prompt("a", add_special_tokens=False) == [97]


def test_decode_rejects_out_of_vocab() -> None:
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([10**9])


def test_the_encode_cache_is_bounded_by_bytes_not_entries() -> None:
    from flotilla.prefix import EncodeCache
    from flotilla.tokenizer import FlotillaTokenizer

    tok = FlotillaTokenizer(content_cache_bytes=4 << 20)
    texts = [f"doc {i} " + "lorem ipsum dolor sit amet " * 2000 for i in range(200)]  # ~54 kB each
    for text in texts:
        assert tok.encode(text) == tok.encode(text)  # the cached copy equals the computed one
    cache: EncodeCache = tok._cache
    assert cache.bytes <= 4 << 20
    assert 0 < len(cache) < 200  # old entries were evicted to stay within the budget
    huge = "x " * 2_000_000  # one prompt larger than an eighth of the budget is not kept at all
    tok.encode(huge)
    assert huge not in cache._entries


def test_prefixes_are_exactly_the_full_encodes_head() -> None:
    import random

    tok = FlotillaTokenizer()
    for seed in range(200):
        rng = random.Random(seed)
        messages = [
            {
                "role": rng.choice(["system", "user", "assistant"]),
                "content": synthetic_text(synthetic_ids(seed * 10 + i, rng.randint(0, 300)))
                + rng.choice(["", " 12,x.", "  \n", "!!!" * 40]),
            }
            for i in range(rng.randint(1, 4))
        ]
        limit = rng.randint(0, 800)
        full = tok.encode_chat(messages)
        head = tok.chat_prefix(messages, limit)
        assert head.ids == full[: len(head.ids)], seed
        assert len(head.ids) >= min(limit, len(full))
        assert head.complete == (head.ids == full)
        text = messages[0]["content"]
        for special in (True, False):
            full = tok.encode_prompt(text, add_special_tokens=special)
            part = tok.prompt_prefix(text, limit, add_special_tokens=special)
            assert part.ids == full[: len(part.ids)], seed
            assert len(part.ids) >= min(limit, len(full))
            if not part.complete:
                assert 0.5 * len(full) < part.total < 2 * len(full)


def test_a_long_shared_head_is_tokenised_once() -> None:
    tok = FlotillaTokenizer()
    document = synthetic_text(synthetic_ids(3, 50_000))
    first = tok.prompt_prefix(document + " one", 1024)
    assert not first.complete
    assert len(tok._heads) == 1
    second = tok.prompt_prefix(document + " two", 1024)  # same head: served from the cache
    assert second.ids == first.ids
    assert len(tok._heads) == 1
    assert tok._heads.bytes <= tok._heads.max_bytes


def test_continue_final_message_synthetic() -> None:
    tok = FlotillaTokenizer()
    messages = [{"role": "user", "content": "ba"}, {"role": "assistant", "content": "be bi"}]
    open_ids = tok.encode_chat(messages, add_generation_prompt=False, continue_final_message=True)
    closed = tok.encode_chat(messages, add_generation_prompt=False)
    assert closed == [*open_ids, EOT]
    assert (
        tok.chat_prefix(messages, 1000, add_generation_prompt=False, continue_final_message=True).ids
        == open_ids
    )


def test_memoised_pieces_give_the_same_ids_as_a_cold_tokenizer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path (every piece a memoised single id) and the per-piece path agree, through memo resets."""
    import flotilla.tokenizer as module

    monkeypatch.setattr(module, "MEMO_PIECES", 8)  # clear the memo often
    texts = [
        "Hello,  world!\n\n  It's 2026 — naïve café ",
        synthetic_text(synthetic_ids(3, 200)),
        "ba ba ba\t\tba  \n",
        "x" * 40 + " ba",  # a piece too long to memoise
    ]
    warm = FlotillaTokenizer(content_cache_bytes=0)
    for _ in range(3):
        for text in texts:
            assert warm.encode(text) == FlotillaTokenizer(content_cache_bytes=0).encode(text)
