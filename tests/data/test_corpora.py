"""Tests for nlcore.data.corpora: loaders, error messages, document starts, the cache."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from nlcore.data.corpora import (
    CorpusFormatError,
    CorpusNotFoundError,
    clear_cache,
    load_corpus,
    prepare,
    wikitext_article_starts,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def _folder(tmp_path: Path, **texts: bytes) -> Path:
    for split, data in texts.items():
        (tmp_path / f"{split}.txt").write_bytes(data)
    return tmp_path


# ---- document starts ---------------------------------------------------------------------
def test_wikitext_doc_starts_exact_positions():
    c = load_corpus("wikitext2", data_root=FIXTURES)
    train = c.texts["train"]
    starts = np.flatnonzero(c.doc_starts("train")).tolist()
    beta = train.index(" = Beta = ")
    assert starts == [0, 2, beta] and beta == 124
    assert train[2:11] == " = Alpha " and train[1] == "\n"
    # neither the subsection " = = History = = " nor the table line " = Played , W = " count
    for not_title in (" = = History = = ", " = Played , W = ", " = = = Sub = = = "):
        assert train.index(not_title) not in starts
    assert np.flatnonzero(c.doc_starts("test")).tolist() == [0, 2, c.texts["test"].index(" = Epsilon")]
    assert c.doc_starts("valid").dtype == bool and len(c.doc_starts("valid")) == len(c.texts["valid"])


def test_article_rule_edge_cases():
    assert wikitext_article_starts("").shape == (0,)
    assert np.flatnonzero(wikitext_article_starts(" = A = \n \n x\n")).tolist() == [0]
    text = "x\n = A = \n \n"  # previous line not blank -> not an article
    assert np.flatnonzero(wikitext_article_starts(text)).tolist() == [0]


def test_folder_and_tinyshakespeare_have_one_document(tmp_path):
    root = tmp_path / "ts"
    (root / "tinyshakespeare").mkdir(parents=True)
    text = "".join(chr(65 + i % 26) for i in range(1000))
    (root / "tinyshakespeare" / "input.txt").write_text(text, encoding="utf-8")
    c = load_corpus("tinyshakespeare", data_root=root)
    assert c.texts["train"] == text[:900] and c.texts["valid"] == text[900:]
    assert c.texts["test"] == c.texts["valid"] and "SAME text as valid" in c.split_note
    assert np.flatnonzero(c.doc_starts("train")).tolist() == [0]


# ---- errors ------------------------------------------------------------------------------
def test_missing_folder():
    with pytest.raises(CorpusNotFoundError, match="missing corpus folder .*no_such_dir"):
        load_corpus("folder:/nonexistent/no_such_dir")
    with pytest.raises(CorpusNotFoundError, match=r"unknown corpus 'wikitext3'.*wikitext2"):
        load_corpus("wikitext3")
    assert issubclass(CorpusNotFoundError, FileNotFoundError)


def test_missing_split_file_names_it(tmp_path):
    folder = _folder(tmp_path, train=b"abc", valid=b"abc")
    with pytest.raises(CorpusNotFoundError, match=r"missing corpus file .*test\.txt"):
        load_corpus(str(folder))


def test_empty_file_names_it(tmp_path):
    folder = _folder(tmp_path, train=b"abc", valid=b"", test=b"abc")
    with pytest.raises(CorpusFormatError, match=r"empty corpus file .*valid\.txt"):
        load_corpus(f"folder:{folder}")


def test_non_utf8_file_names_file_and_offset(tmp_path):
    folder = _folder(tmp_path, train=b"abc\n\xc3\xa9d\xffe", valid=b"a", test=b"a")
    with pytest.raises(CorpusFormatError, match=r"train\.txt.*offset 7") as err:
        load_corpus(str(folder))
    assert "UTF-8" in str(err.value)


def test_line_endings_are_not_translated(tmp_path):
    folder = _folder(tmp_path, train=b"a\r\nb\rc\n", valid=b"a", test=b"b")
    assert load_corpus(str(folder)).texts["train"] == "a\r\nb\rc\n"


def test_not_found_names_corpus_paths_and_remedy(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(CorpusNotFoundError) as err:
        load_corpus("wikitext2", data_root=tmp_path)
    msg = str(err.value)
    assert "'wikitext2'" in msg and str(tmp_path / "wikitext-2") in msg
    assert "NLCORE_DATA" in msg and "datasets" in msg
    with pytest.raises(CorpusNotFoundError, match=r"tinyshakespeare.*input\.txt"):
        load_corpus("tinyshakespeare", data_root=tmp_path)


def test_synthetic_only_kwargs():
    with pytest.raises(TypeError, match="synthetic"):
        load_corpus("wikitext2", data_root=FIXTURES, seed=1)
    with pytest.raises(TypeError, match="synthetic keyword"):
        load_corpus("synthetic", n_chars=5000, not_a_field=3)


# ---- synthetic through the loader, prepare and its cache ---------------------------------
def test_synthetic_corpus_and_prepare_stats():
    c = load_corpus("synthetic", seed=3, n_chars=5000)
    assert [len(c.texts[s]) for s in ("train", "valid", "test")] == [5000, 500, 500]
    assert c.entropy_rate_bits is not None and "seed=3" in c.source
    starts = c.doc_starts("train")
    assert starts[0] and all(c.texts["train"][i] == "[" for i in np.flatnonzero(starts))
    tc = prepare("synthetic", seed=3, n_chars=5000)
    assert tc.stats["train"]["documents"] == c.texts["train"].count("[")
    assert tc.stats["forgetful_rate_bits"] > tc.stats["entropy_rate_bits"] == tc.entropy_rate_bits
    assert tc.stats["valid"]["forgetful_bits"] > tc.stats["valid"]["optimal_bits"]


def test_prepare_is_cached_and_reports_unknowns():
    clear_cache()
    a = prepare("wikitext2", data_root=FIXTURES)
    assert prepare("wikitext2", data_root=str(FIXTURES)) is a
    assert prepare("synthetic", n_chars=3000) is not prepare("synthetic", n_chars=4000)
    assert a.stats["valid"]["unknown"] == 1 and a.stats["valid"]["unknown_chars"] == {"é": 1}
    assert a.ids["valid"][a.doc_starts["valid"].nonzero()[-1]].item() == a.tokenizer.encode(" ")[0]
    assert a.stats["train"]["documents"] == 3 and a.stats["vocab_size"] == a.tokenizer.vocab_size
    assert a.tokenizer.decode(a.ids["train"]) == load_corpus("wikitext2", data_root=FIXTURES).texts["train"]


# ---- the real corpus (11 MB; skipped when /work/shared/data is absent) --------------------
@pytest.mark.skipif(not (SHARED / "wikitext-2" / "train.txt").is_file(),
                    reason=f"real WikiText-2 not found under {SHARED}")
def test_real_wikitext2_counts():
    clear_cache()
    t0 = time.perf_counter()
    tc = prepare("wikitext2", data_root=SHARED)
    elapsed = time.perf_counter() - t0
    st = tc.stats
    assert [st[s]["chars"] for s in ("train", "valid", "test")] == [10_780_437, 1_120_192, 1_255_018]
    assert tc.tokenizer.vocab_size == 283 + 1
    assert st["valid"]["unknown"] == 0 and st["test"]["unknown"] == 0
    # 600 / 60 / 60 articles, plus position 0 (the blank line before the first title)
    assert [st[s]["documents"] for s in ("train", "valid", "test")] == [601, 61, 61]
    assert elapsed < 5.0, f"prepare('wikitext2') took {elapsed:.2f} s"
    clear_cache()


@pytest.mark.skipif(not (SHARED / "tinyshakespeare" / "input.txt").is_file(),
                    reason=f"real Tiny Shakespeare not found under {SHARED}")
def test_real_tinyshakespeare_split():
    c = load_corpus("tinyshakespeare", data_root=SHARED)
    assert len(c.texts["train"]) == 1_003_854 and len(c.texts["valid"]) == 111_540


# ---- the HuggingFace fallback, with a stand-in `datasets` module --------------------------
def _fake_datasets(monkeypatch, load_dataset):
    import importlib.machinery
    import sys
    import types

    mod = types.ModuleType("datasets")
    mod.__spec__ = importlib.machinery.ModuleSpec("datasets", None)
    mod.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", mod)
    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)


def test_hub_fallback_rebuilds_blank_lines(tmp_path, monkeypatch):
    rows = {"text": ["", " = A = \n", "", " a b\n"]}
    calls = []

    def load_dataset(path, name):
        calls.append((path, name))
        return {"train": rows, "validation": rows, "test": rows}

    _fake_datasets(monkeypatch, load_dataset)
    c = load_corpus("wikitext2", data_root=tmp_path)
    assert calls == [("Salesforce/wikitext", "wikitext-2-v1")]
    assert c.texts["train"] == " \n = A = \n \n a b\n" and "hub" in c.source
    assert np.flatnonzero(c.doc_starts("valid")).tolist() == [0, 2]


def test_hub_failure_is_reported(tmp_path, monkeypatch):
    def load_dataset(path, name):
        raise ConnectionError("no network")

    _fake_datasets(monkeypatch, load_dataset)
    with pytest.raises(CorpusNotFoundError, match=r"failed \(ConnectionError: no network\)"):
        load_corpus("wikitext2", data_root=tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CorpusNotFoundError, match="skipped"):
        load_corpus("wikitext2", data_root=tmp_path)
