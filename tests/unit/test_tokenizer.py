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
    from flotilla.tokenizer import EncodeCache, FlotillaTokenizer

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
