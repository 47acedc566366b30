"""Sequence models sharing one interface (`nlcore.models.base.SequenceModel`)."""

from __future__ import annotations

from nlcore.models.base import Resets, SequenceModel, State
from nlcore.models.nested_lstm import LSTMLM, NestedLSTM


def build_model(cfg, vocab_size: int, chunks: tuple[int, int] = (16, 256),
                chain_levels: tuple[str, ...] | None = None) -> SequenceModel:
    """The model named by a `ModelConfig`. `chunks`: the medium/slow CMS chunk sizes, which set the
    nested LSTM's hierarchical summaries' timescales; `chain_levels`: the CMS levels that own
    HOPE's chain MLPs under `cms_mode="outer"` (fast to slow)."""
    levels = dict(embed_level=cfg.embed_level, head_level=cfg.head_level)
    if cfg.kind == "nested_lstm":
        return NestedLSTM(vocab_size, cfg.d_model, cfg.d_ff, norm_residual=cfg.norm_residual,
                          activation=cfg.activation, dropout=cfg.dropout, zero_init_ffn_out=cfg.zero_init_ffn_out,
                          hierarchical_state=cfg.hierarchical_state, chunks=chunks, **levels)
    if cfg.kind == "lstm_lm":
        return LSTMLM(vocab_size, cfg.d_model)
    if cfg.kind == "transformer":
        from nlcore.models.transformer import CausalTransformer

        return CausalTransformer(vocab_size, cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.d_ff, cfg.dropout, **levels)
    mem = dict(mem_chunk=cfg.mem_chunk, mem_impl=cfg.mem_impl, momentum=cfg.momentum, mem_alpha0=cfg.mem_alpha0,
               **levels)
    if cfg.kind == "titans":
        from nlcore.models.titans import TitansLM

        return TitansLM(vocab_size, cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.d_ff, memory=cfg.memory,
                        mem_hidden=cfg.mem_hidden, retention=cfg.mem_retention,
                        step_max=cfg.mem_step_max, normalize=cfg.mem_normalize, state_max=cfg.mem_state_max,
                        grad_chunks=cfg.mem_grad_chunks, **mem)
    if cfg.kind == "hope":
        from nlcore.models.hope import HOPE

        return HOPE(vocab_size, cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.d_ff, cms_chunks=cfg.chunk_list(),
                    cms_mode=cfg.cms_mode, cms_lr=cfg.cms_lr, cms_teach=cfg.cms_teach, chain_levels=chain_levels,
                    **mem)
    raise ValueError(f"model.kind: unknown model {cfg.kind!r}")


__all__ = ["LSTMLM", "NestedLSTM", "Resets", "SequenceModel", "State", "build_model"]
