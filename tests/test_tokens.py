"""hubclient.science.tokens: the named word -> token rules, the no-real-token warning, the
display decoder, character offsets. Expected ids are read off hand-built vocabularies (and the
tokenizers' own piece lists), never from the module under test."""

from __future__ import annotations

import warnings

import pytest

from hubclient.errors import HubError
from hubclient.science import tokens as T


def sentencepiece_like():
    """A Llama-style BPE tokenizer: ``▁`` word-start marker prepended, byte fallback
    ``<0x00>..<0xFF>``, pieces ``▁cat``, ``▁c``, ``at`` and single letters c/a/t."""
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "▁": 3, "▁cat": 4, "c": 5, "a": 6, "t": 7, "▁c": 8, "at": 9}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[("▁", "c"), ("a", "t"), ("▁c", "at")], unk_token="<unk>", byte_fallback=True))
    core.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    core.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    return tok, vocab


def byte_level():
    """A GPT-2-style byte-level BPE tokenizer (``Ġ`` marker, every byte a token, no unk)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<|endoftext|>"], show_progress=False)
    core.train_from_iterator(["the cat sat on the mat", "a cat"], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>")


def word_level():
    from conftest import SPECIALS, build_tokenizer

    tok = build_tokenizer()
    return tok, {t: tok.convert_tokens_to_ids(t) for t in SPECIALS + ["cat", "the", "mat"]}


def test_spellings():
    assert T.spellings("cat") == ["cat"]
    assert T.spellings("cat", "written+space") == ["cat", " cat"]
    assert T.spellings("cat", "space+written") == [" cat", "cat"]
    assert T.spellings(" cat ", "stripped+space") == [" cat ", "cat", " cat"]
    assert T.spellings("cat", "stripped+space") == ["cat", " cat"]  # repeats dropped
    with pytest.raises(ValueError, match="unknown spelling"):
        T.spellings("cat", "nope")


def test_rules_on_a_sentencepiece_vocabulary():
    tok, v = sentencepiece_like()
    # "cat" -> [▁cat]; " cat" -> [▁, ▁cat] (the Prepend normaliser adds a second ▁)
    assert T.spelled_ids(tok, "cat", "written+space") == [[v["▁cat"]], [v["▁"], v["▁cat"]]]
    assert T.word_ids(tok, "cat", "first", "written+space") == [v["▁cat"], v["▁"]]
    assert T.word_ids(tok, "cat", "first-real", "written+space") == [v["▁cat"]]  # bare ▁ is whitespace only
    assert T.word_ids(tok, "cat", "single", "written+space") == [v["▁cat"]]  # " cat" is two tokens
    # "at" -> [▁, at]: first is the bare marker; first-real finds nothing, single nothing
    assert T.word_ids(tok, "at", "first") == [v["▁"]]
    assert T.word_ids(tok, "at", "first-real") == []
    assert T.word_ids(tok, "at", "single") == []
    with pytest.raises(ValueError, match="unknown rule"):
        T.word_ids(tok, "cat", "last")


def test_rules_on_a_word_level_vocabulary_skip_the_unknown_token():
    tok, v = word_level()
    assert T.word_ids(tok, "zebra", "first") == [v["<unk>"]]  # 'first' keeps whatever comes first
    assert T.word_ids(tok, "zebra", "first-real", "written+space") == []
    assert T.word_ids(tok, "zebra", "single", "stripped+space") == []
    assert T.word_ids(tok, " cat ", "single", "stripped+space") == [v["cat"]]
    assert T.word_ids(tok, "the cat", "single") == []  # two tokens
    assert T.word_ids(tok, "the cat", "first") == [v["the"]]


def test_fallback_kind():
    tok, v = sentencepiece_like()
    assert T.fallback_kind(tok, v["<0xEE>"]) == "a raw byte token"
    assert T.fallback_kind(tok, v["<0x78>"], "x") == "a raw byte token"  # the byte of a letter the vocabulary lacks
    assert T.fallback_kind(tok, v["<unk>"]) == "the unknown token"
    assert T.fallback_kind(tok, v["▁cat"], "cat") is None
    btok = byte_level()
    first = btok("\ue000", add_special_tokens=False)["input_ids"][0]
    assert btok.convert_ids_to_tokens(first) == "î"  # byte 0xEE in GPT-2's byte alphabet
    assert T.fallback_kind(btok, first, "\ue000") == "a raw byte token"
    cat = btok(" cat", add_special_tokens=False)["input_ids"]
    assert len(cat) == 1 and T.fallback_kind(btok, cat[0], " cat") is None


@pytest.mark.parametrize("make", [sentencepiece_like, byte_level])
def test_follow_word_warns_once_for_a_private_use_character(make):
    tok = make()
    tok = tok[0] if isinstance(tok, tuple) else tok
    ids = tok("\ue000", add_special_tokens=False)["input_ids"]
    pieces = tok.convert_ids_to_tokens(ids)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = T.follow_word(tok, "\ue000", "--target")
    assert got == ids[0]
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "\n" not in message
    assert "'\\ue000' (U+E000) has no token of its own" in message
    assert "a raw byte token" in message and f"it would follow {pieces[0]!r}" in message


def test_follow_word_warns_for_the_unknown_token_and_for_several_tokens():
    tok, v = word_level()
    with pytest.warns(UserWarning, match=r"--token 'zebra' \(U\+007A U\+0065 U\+0062 U\+0072 U\+0061\) has no token of its own.*the unknown token"):
        assert T.follow_word(tok, "zebra", "--token") == v["<unk>"]
    with pytest.warns(UserWarning, match=r"--target 'the cat' is 2 tokens \['the', 'cat'\]; following its first token 'the'"):
        assert T.follow_word(tok, "the cat") == v["the"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert T.follow_word(tok, "mat") == v["mat"]
    with pytest.raises(HubError, match="tokenises to no tokens"):
        T.follow_word(tok, "   ")


def test_decoder_and_visible_whitespace():
    btok = byte_level()
    cat = btok(" cat", add_special_tokens=False)["input_ids"][0]
    newline = btok("\n", add_special_tokens=False)["input_ids"][0]
    assert T.decoder(btok)([cat, newline]) == [" cat", "\n"]
    assert T.decoder(btok, visible=True)([cat, newline]) == ["␣cat", "\\n"]
    import numpy as np

    assert T.decoder(btok)(np.asarray([cat, cat])) == [" cat", " cat"]
    assert T.show_whitespace(" a b\tc") == "␣a b\\tc"


def test_token_words_strip_markers():
    tok, v = sentencepiece_like()
    words = T.token_words(tok)
    assert len(words) == len(tok)
    assert words[v["▁cat"]] == "cat" and words[v["at"]] == "at" and words[v["▁"]] == ""


def test_token_offsets_check_the_ids():
    tok, v = word_level()
    ids = tok("the cat")["input_ids"]
    assert ids == [v["<bos>"], v["the"], v["cat"]]
    assert T.token_offsets(tok, ["the cat"], [ids]) == [[(0, 0), (0, 3), (4, 7)]]
    with pytest.raises(HubError, match="other token ids"):
        T.token_offsets(tok, ["the cat"], [ids[1:]])
