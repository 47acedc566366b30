"""Tests for nlcore.data.tokenizer: round trip, the unknown policy, JSON, speed."""

from __future__ import annotations

import json
import time

import pytest
import torch

from nlcore.data.tokenizer import UNK_CHAR, CharTokenizer

TRAIN = "hello <unk> world\nçà 戦 ok\r\n"


def test_vocab_is_sorted_train_chars_plus_unk():
    tok = CharTokenizer.from_text(TRAIN)
    assert list(tok.chars) == sorted(set(TRAIN))
    assert tok.unk_id == len(set(TRAIN))
    assert tok.vocab_size == tok.unk_id + 1 == len(tok)


def test_round_trip():
    tok = CharTokenizer.from_text(TRAIN)
    ids = tok.encode(TRAIN)
    assert ids.dtype == torch.long and ids.shape == (len(TRAIN),)
    assert tok.decode(ids) == TRAIN
    assert tok.decode(ids.tolist()) == TRAIN
    assert ids.max().item() < tok.unk_id  # nothing unknown in train
    assert tok.count_unknown(TRAIN) == 0 and tok.unknown_chars(TRAIN) == {}
    assert tok.encode("").shape == (0,) and tok.decode([]) == ""


def test_literal_unk_string_is_ordinary_text():
    tok = CharTokenizer.from_text(TRAIN)
    ids = tok.encode("<unk>")
    assert ids.shape == (5,) and (ids != tok.unk_id).all()


def test_unknown_policy_maps_counts_reports_decodes():
    tok = CharTokenizer.from_text("abc")
    text = "abzcZZé"
    ids = tok.encode(text)
    assert ids.tolist() == [0, 1, 3, 2, 3, 3, 3]  # z, Z, é -> unk_id = 3, nothing dropped
    assert tok.count_unknown(text) == 4
    assert tok.unknown_chars(text) == {"Z": 2, "z": 1, "é": 1}
    assert list(tok.unknown_chars(text)) == ["Z", "z", "é"]  # most frequent first
    assert tok.decode(ids) == "ab" + UNK_CHAR + "c" + UNK_CHAR * 3
    # code points above and below every known one
    assert tok.encode("\x00\U0001F600").tolist() == [3, 3]


def test_decode_rejects_out_of_range_ids():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match="vocab_size"):
        tok.decode([0, 4])
    with pytest.raises(ValueError, match="vocab_size"):
        tok.decode(torch.tensor([-1]))


def test_json_save_load_equality(tmp_path):
    tok = CharTokenizer.from_text(TRAIN)
    d = tok.to_dict()
    assert d["kind"] == "char" and d["unk_policy"] == "map_to_unk"
    assert d["unk_id"] == len(d["chars"]) and d["vocab_size"] == len(d["chars"]) + 1
    path = tmp_path / "tok.json"
    tok.save(path)
    assert json.loads(path.read_text(encoding="utf-8")) == d
    back = CharTokenizer.load(path)
    assert back == tok and hash(back) == hash(tok)
    assert back != CharTokenizer.from_text("xyz")
    assert torch.equal(back.encode(TRAIN), tok.encode(TRAIN))


def test_from_dict_errors_name_the_field():
    d = CharTokenizer.from_text("abc").to_dict()
    with pytest.raises(ValueError, match="'kind'"):
        CharTokenizer.from_dict({**d, "kind": "bpe"})
    with pytest.raises(ValueError, match="'vocab_size'"):
        CharTokenizer.from_dict({**d, "vocab_size": 7})
    with pytest.raises(ValueError, match="'chars'"):
        CharTokenizer.from_dict({"kind": "char"})
    with pytest.raises(ValueError, match="sorted"):
        CharTokenizer(["b", "a"])


def test_encode_is_fast():
    text = ("The quick brown fox jumps over the lazy dog @-@ 1 @,@ 000 .\n é 戦" * 175_000)[:11_000_000]
    tok = CharTokenizer.from_text(text[:10_000])
    t0 = time.perf_counter()
    ids = tok.encode(text)
    assert time.perf_counter() - t0 < 2.0
    assert ids.shape == (11_000_000,)
