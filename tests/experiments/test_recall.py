"""The associative-memory recall benchmark: stream generator and the claims it is built to show."""

from __future__ import annotations

import pytest
import torch

from nlcore.experiments.recall import (
    METHODS,
    lstsq_memory,
    make_stream,
    recall_error,
    run_recall_benchmark,
    write_memory,
)

F64 = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_make_stream_is_seeded_and_consistent():
    a = make_stream(16, 20, generator=_gen(0), correlation=0.5, overwrite_frac=0.2, dtype=F64)
    b = make_stream(16, 20, generator=_gen(0), correlation=0.5, overwrite_frac=0.2, dtype=F64)
    c = make_stream(16, 20, generator=_gen(1), correlation=0.5, overwrite_frac=0.2, dtype=F64)
    assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
    assert not torch.equal(a.keys, c.keys)
    T = a.key_ids.numel()
    assert T == 25 and a.keys.shape == (25, 16) and a.stored_keys.shape == (20, 16)
    assert torch.allclose(a.keys.norm(dim=1), torch.ones(T, dtype=F64))  # unit keys
    assert torch.equal(a.keys, a.stored_keys[a.key_ids])  # an overwrite reuses the same key
    seen = set()
    for i in a.key_ids.tolist():  # first writes come in order 0..n−1, overwrites after them
        assert i in seen or i == len(seen)
        seen.add(i)
    for j in range(20):  # latest value = value of the last write of key j
        last = max(t for t in range(T) if a.key_ids[t] == j)
        assert torch.equal(a.latest_values[j], a.values[last])


def test_correlation_knob_raises_key_similarity():
    def mean_abs_cos(c):
        K = make_stream(64, 64, generator=_gen(0), correlation=c, dtype=F64).stored_keys
        C = K @ K.T
        return (C - torch.eye(64, dtype=F64)).abs().sum() / (64 * 63)

    assert mean_abs_cos(0.0) < mean_abs_cos(0.5) < mean_abs_cos(0.9)


def test_lstsq_is_exact_below_load_one_on_uncorrelated_keys():
    df = run_recall_benchmark(d=32, loads=(0.25, 0.5, 0.9), correlation=0.0, overwrite_frac=0.0,
                              methods=("lstsq",), dtype=F64)
    assert (df.value < 1e-16).all()
    df = run_recall_benchmark(d=32, loads=(0.5,), correlation=0.5, overwrite_frac=0.3,
                              methods=("lstsq",), dtype=F64)  # overwrites: latest value only
    assert (df.value < 1e-12).all()


def test_exact_and_normalized_delta_coincide_on_unit_keys_only():
    kw = dict(d=16, loads=(0.5, 1.5), seeds=(0,), methods=("delta_exact", "delta_normalized"),
              dtype=F64, eta=3.0)
    df = run_recall_benchmark(**kw).pivot_table(index="load", columns="method", values="value")
    assert torch.allclose(torch.tensor(df.delta_exact.values), torch.tensor(df.delta_normalized.values),
                          atol=1e-12)
    df = run_recall_benchmark(key_norm_spread=0.5, **kw).pivot_table(
        index="load", columns="method", values="value")
    assert (df.delta_exact - df.delta_normalized).abs().max() > 1e-6


def test_benchmark_table_shape_and_delta_beats_hebbian_on_correlated_keys():
    loads = (0.25, 0.5, 1.0, 2.0)
    df = run_recall_benchmark(d=32, loads=loads, correlation=0.5, overwrite_frac=0.2)
    assert list(df.columns) == ["method", "load", "seed", "metric", "value"]
    assert len(df) == len(METHODS) * len(loads) * 3 and set(df.metric) == {"recall_error"}
    assert df.value.notna().all()
    mean = df.groupby(["method", "load"]).value.mean().unstack("method")
    assert (mean.delta_exact < mean.hebbian).all()  # as observed at every load
    assert (mean.lstsq <= mean.delta_exact + 1e-6).all()


def test_write_memory_vectorised_over_seeds_matches_single():
    streams = [make_stream(8, 6, generator=_gen(s), correlation=0.3, overwrite_frac=0.25,
                           dtype=F64) for s in range(3)]
    keys = torch.stack([s.keys for s in streams])
    values = torch.stack([s.values for s in streams])
    for method in METHODS[:-1]:
        W = write_memory(method, keys, values, eta=0.7)
        for i in range(3):
            Wi = write_memory(method, keys[i:i + 1], values[i:i + 1], eta=0.7)
            assert torch.allclose(W[i], Wi[0], atol=1e-14)
    K = torch.stack([s.stored_keys for s in streams])
    V = torch.stack([s.latest_values for s in streams])
    assert recall_error(lstsq_memory(K, V), K, V).max() < 1e-20


@pytest.mark.parametrize("field,kw", [("correlation", dict(correlation=1.5)),
                                      ("overwrite_frac", dict(overwrite_frac=1.0)),
                                      ("key_norm_spread", dict(key_norm_spread=-1.0)),
                                      ("rank", dict(rank=0))])
def test_make_stream_validation(field, kw):
    with pytest.raises(ValueError, match=f"^{field} must"):
        make_stream(8, 4, generator=_gen(0), **kw)
