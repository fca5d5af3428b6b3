"""The offline GPT-2 tokenizer: known ids, round trips, display strings, BPE replay."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gpt2_max.tokenizer import END_OF_TEXT_ID, Tokenizer, display_bytes

TOKENIZER = Tokenizer()

# From ../shared/assets/README.md (public references for GPT-2's tokenizer).
KNOWN = {
    "Hello world": [15496, 995],
    "Hello world, this is GPT-2!": [15496, 995, 11, 428, 318, 402, 11571, 12, 17, 0],
    "Hello!! I'm Andrej Karpathy. It's 2022. w00t :D 🤗": [
        15496,
        3228,
        314,
        1101,
        10948,
        73,
        509,
        5117,
        10036,
        13,
        632,
        338,
        33160,
        13,
        266,
        405,
        83,
        1058,
        35,
        12520,
        97,
        245,
    ],
}


def test_known_ids():
    for text, ids in KNOWN.items():
        assert TOKENIZER.encode(text) == ids
        assert TOKENIZER.decode(ids) == text


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_round_trip_on_arbitrary_unicode(text):
    # Lone surrogates cannot be UTF-8; they are replaced before encoding.
    clean = text.encode("utf-8", errors="replace").decode("utf-8")
    assert TOKENIZER.decode(TOKENIZER.encode(text)) == clean


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1))
def test_token_bytes_concatenate_to_the_text(text):
    ids = TOKENIZER.encode(text)
    joined = b"".join(t.bytes for t in TOKENIZER.tokens(ids))
    assert joined == text.encode("utf-8", errors="replace")


def test_display_marks_spaces_newlines_and_partial_utf8():
    ids = TOKENIZER.encode(" world\n\tx")
    shown = [t.display for t in TOKENIZER.tokens(ids)]
    assert shown[0] == "␣world"
    assert "↵" in "".join(shown) and "⇥" in "".join(shown)
    assert TOKENIZER.token(995).symbol == "Ġworld"
    # 🤗 is three tokens here: bytes F0 9F A4 97 split across them.
    parts = [TOKENIZER.token(i).display for i in (12520, 97, 245)]
    assert parts[0].startswith("<0xF0>") or "<0x" in parts[0]
    assert all("<0x" in p for p in parts)
    assert display_bytes("é".encode()) == "é"
    assert display_bytes(b"\x00") == "<U+0000>"


def test_end_of_text_is_text_unless_allowed():
    typed = TOKENIZER.encode("<|endoftext|>")
    assert END_OF_TEXT_ID not in typed and len(typed) > 1
    assert TOKENIZER.encode("<|endoftext|>", allow_end_of_text=True) == [END_OF_TEXT_ID]
    assert TOKENIZER.token(END_OF_TEXT_ID).display == "<|endoftext|>"


def test_merge_replay_ends_at_the_encoder_tokens():
    for text in ["Hello world, this is GPT-2!", " tokenization", " 12345", " Karpathy", "🤗"]:
        for chunk in TOKENIZER.pretokenize(text):
            steps = TOKENIZER.merge_steps(chunk)
            assert b"".join(steps[0]) == chunk.encode("utf-8")
            assert all(len(p) == 1 for p in steps[0])
            assert [len(s) for s in steps] == sorted((len(s) for s in steps), reverse=True)
            final_ids = [TOKENIZER.rank(p) for p in steps[-1]]
            assert final_ids == TOKENIZER.encode(chunk)


def test_pretokenize_splits_like_gpt2():
    assert TOKENIZER.pretokenize("Hello world, it's 2022!") == ["Hello", " world", ",", " it", "'s", " 2022", "!"]


def test_ranks_file_checksum_is_verified(monkeypatch, tmp_path):
    import pytest

    from gpt2_max import tokenizer as module
    from gpt2_max.errors import ModelLoadError

    damaged = tmp_path / "gpt2.tiktoken"
    damaged.write_bytes(module.RANKS_PATH.read_bytes()[:-10])
    monkeypatch.setattr(module, "RANKS_PATH", damaged)
    module._encoding.cache_clear()
    try:
        with pytest.raises(ModelLoadError, match="sha256"):
            module._encoding()
    finally:
        monkeypatch.undo()
        module._encoding.cache_clear()
