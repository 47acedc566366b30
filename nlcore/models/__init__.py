"""Sequence models sharing one interface (`nlcore.models.base.SequenceModel`)."""

from __future__ import annotations

from nlcore.models.base import Resets, SequenceModel, State
from nlcore.models.nested_lstm import LSTMLM, NestedLSTM


def build_model(cfg, vocab_size: int, chunks: tuple[int, int] = (16, 256)) -> SequenceModel:
    """The model named by a `ModelConfig` (`chunks`: the medium/slow CMS chunk sizes, which set
    the hierarchical summaries' timescales)."""
    if cfg.kind == "nested_lstm":
        return NestedLSTM(vocab_size, cfg.d_model, cfg.d_ff, norm_residual=cfg.norm_residual,
                          activation=cfg.activation, dropout=cfg.dropout, embed_level=cfg.embed_level,
                          head_level=cfg.head_level, zero_init_ffn_out=cfg.zero_init_ffn_out,
                          hierarchical_state=cfg.hierarchical_state, chunks=chunks)
    if cfg.kind == "lstm_lm":
        return LSTMLM(vocab_size, cfg.d_model)
    raise ValueError(f"model.kind: unknown model {cfg.kind!r}")


__all__ = ["LSTMLM", "NestedLSTM", "Resets", "SequenceModel", "State", "build_model"]
