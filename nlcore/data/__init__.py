"""Data for character-level language modelling: tokenizer, corpora, streams, synthetic.

- :mod:`~nlcore.data.tokenizer`: :class:`CharTokenizer` (train-split vocabulary + unk id);
- :mod:`~nlcore.data.corpora`: :func:`load_corpus`, :func:`prepare` (WikiText-2, Tiny
  Shakespeare, local folders, the synthetic corpus) with document starts; :func:`joint_tokenizer`,
  one vocabulary for several corpora;
- :mod:`~nlcore.data.streams`: :class:`CharStream`, B contiguous rows read in windows of T
  so persistent state carries across windows;
- :mod:`~nlcore.data.synthetic`: a corpus with a known entropy rate and a long-range key.

Importing this package reads no files and generates nothing.
"""

from __future__ import annotations

from nlcore.data.corpora import (
    Corpus,
    CorpusFormatError,
    CorpusNotFoundError,
    TokenizedCorpus,
    clear_cache,
    joint_tokenizer,
    load_corpus,
    prepare,
    tokenize_corpus,
    wikitext_article_starts,
)
from nlcore.data.streams import Batch, CharStream, stream_for
from nlcore.data.synthetic import (
    SyntheticSpec,
    forgetful_log_loss_bits,
    generate,
    optimal_log_loss_bits,
)
from nlcore.data.tokenizer import CharTokenizer

__all__ = [
    "Batch",
    "CharStream",
    "CharTokenizer",
    "Corpus",
    "CorpusFormatError",
    "CorpusNotFoundError",
    "SyntheticSpec",
    "TokenizedCorpus",
    "clear_cache",
    "forgetful_log_loss_bits",
    "generate",
    "joint_tokenizer",
    "load_corpus",
    "optimal_log_loss_bits",
    "prepare",
    "stream_for",
    "tokenize_corpus",
    "wikitext_article_starts",
]
