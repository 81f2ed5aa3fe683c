"""The optional HF tokenizer path: a real ``tokenizer.json`` built with the ``tokenizers`` package."""

from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from flotilla.tokenizer import (
    BOS,
    END_HEADER,
    EOT,
    SPECIAL_TOKENS,
    START_HEADER,
    HFTokenizer,
    load_tokenizer,
)

WORDS = ["hello", "world", "system", "user", "assistant", "be", "brief", "\n"]


@pytest.fixture
def tokenizer_json(tmp_path: Path) -> str:
    vocab = {w: i for i, w in enumerate(["[UNK]", *WORDS])}
    # Llama-3's special tokens, at Llama-3's ids, so the chat layout can be checked id for id
    vocab.update({SPECIAL_TOKENS[i]: i for i in (BOS, START_HEADER, END_HEADER, EOT)})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(pattern="\n", behavior="isolated"), pre_tokenizers.WhitespaceSplit()]
    )
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    return str(path)


def test_load_tokenizer_picks_hf_for_a_path(tokenizer_json: str) -> None:
    tok = load_tokenizer(tokenizer_json)
    assert isinstance(tok, HFTokenizer)
    assert tok.encode("hello world") == [1, 2]
    assert tok.encode_prompt("hello") == [BOS, 1]


def test_hf_chat_layout_matches_llama3(tokenizer_json: str) -> None:
    tok = load_tokenizer(tokenizer_json)
    nl = tok.encode("\n\n")
    ids = tok.encode_chat([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}])
    assert ids[:3] == [BOS, START_HEADER, 3]
    assert ids[3] == END_HEADER
    assert ids[4 : 4 + len(nl)] == nl
    assert ids.count(START_HEADER) == 3
    assert ids.count(EOT) == 2
    assert ids[-1 - len(nl)] == END_HEADER


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="tokenizer file not found"):
        load_tokenizer(str(tmp_path / "absent.json"))
