"""Associative-memory recall benchmark: Hebbian vs LMS vs delta rule vs least squares.

Nested Learning (Behrouz et al., NeurIPS 2025) §2.3, Eqs. 26–29: the dot-product objective
(Hebbian write) "ignores the dependencies of data samples", the L2 objective (delta rule) does
not. The benchmark: a stream of key→value pairs with CORRELATED keys and OVERWRITES; a linear
memory W (d_v, d_k) starts at 0 and is written once per pair in stream order; the score is the
recall of the latest value of every stored key as a function of load = n_keys / d_k.

Keys: k = normalize(√c · U z + √(1−c) · ε), U (d_k, r) a random orthonormal basis shared by all
keys, z ~ N(0, I_r/r), ε ~ N(0, I/d_k); c = `correlation` is the share of a key's energy in the
shared rank-r subspace. `key_norm_spread` s > 0 rescales each key by exp(s·N(0,1)) (then the
exact and the normalised delta rule differ; at s = 0 they coincide, a built-in check).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor

from nlcore.delta import gd_step, hebbian_step, normalized_delta_step, proximal_l2_step

METHODS = ("hebbian", "gd", "delta_exact", "delta_normalized", "lstsq")
DEFAULT_LOADS = (0.125, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)


@dataclass(frozen=True)
class RecallStream:
    """A write stream and the content it leaves behind."""

    keys: Tensor  # (T, d_k) key of each write, in stream order
    values: Tensor  # (T, d_v) value of each write
    key_ids: Tensor  # (T,) index of the distinct key written
    stored_keys: Tensor  # (n, d_k) the distinct keys
    latest_values: Tensor  # (n, d_v) the last value written for each distinct key


def make_stream(d_k: int, n_keys: int, *, generator: torch.Generator, d_v: int | None = None,
                correlation: float = 0.0, rank: int | None = None, overwrite_frac: float = 0.0,
                key_norm_spread: float = 0.0, device="cpu",
                dtype: torch.dtype = torch.float32) -> RecallStream:
    """Seeded key→value stream: n_keys distinct keys, a fraction `overwrite_frac` of the T writes
    are overwrites (T = round(n_keys / (1 − overwrite_frac))), each reusing a uniformly drawn
    earlier key with a fresh value at a uniformly drawn later time. Pure: all randomness from
    `generator` (drawn on CPU, so CPU and GPU streams are identical)."""
    if not (isinstance(d_k, int) and d_k > 0):
        raise ValueError(f"d_k must be a positive int, got {d_k!r}")
    if not (isinstance(n_keys, int) and n_keys > 0):
        raise ValueError(f"n_keys must be a positive int, got {n_keys!r}")
    if not 0.0 <= correlation <= 1.0:
        raise ValueError(f"correlation must be in [0, 1], got {correlation!r}")
    if not 0.0 <= overwrite_frac < 1.0:
        raise ValueError(f"overwrite_frac must be in [0, 1), got {overwrite_frac!r}")
    if key_norm_spread < 0:
        raise ValueError(f"key_norm_spread must be >= 0, got {key_norm_spread!r}")
    d_v = d_k if d_v is None else d_v
    rank = max(1, d_k // 8) if rank is None else rank
    if not (isinstance(rank, int) and 1 <= rank <= d_k):
        raise ValueError(f"rank must be an int in [1, d_k], got {rank!r}")
    g, f64 = generator, torch.float64

    U, _ = torch.linalg.qr(torch.randn(d_k, rank, generator=g, dtype=f64))  # basis (d_k, r)
    z = torch.randn(n_keys, rank, generator=g, dtype=f64) / rank**0.5  # (n, r)
    noise = torch.randn(n_keys, d_k, generator=g, dtype=f64) / d_k**0.5  # ε: (n, d_k)
    K = correlation**0.5 * z @ U.T + (1 - correlation) ** 0.5 * noise  # shared + private
    K = K / K.norm(dim=1, keepdim=True)  # unit keys (n, d_k)
    K = K * torch.exp(key_norm_spread * torch.randn(n_keys, 1, generator=g, dtype=f64))

    n_over = round(n_keys * overwrite_frac / (1 - overwrite_frac))  # overwrites
    over_ids = torch.randint(0, n_keys, (n_over,), generator=g)  # which key each rewrites
    over_t = over_ids + (n_keys - over_ids) * torch.rand(n_over, generator=g, dtype=f64)
    times = torch.cat([torch.arange(n_keys, dtype=f64), over_t + 1e-9])  # first writes at 0..n−1
    key_ids = torch.cat([torch.arange(n_keys), over_ids])[torch.argsort(times)]  # (T,)
    T = key_ids.numel()
    values = torch.randn(T, d_v, generator=g, dtype=f64) / d_v**0.5  # fresh value per write

    last = torch.full((n_keys,), -1, dtype=torch.long)
    last.scatter_reduce_(0, key_ids, torch.arange(T), reduce="amax")  # last write of each key
    kw = dict(device=device, dtype=dtype)
    return RecallStream(keys=K[key_ids].to(**kw), values=values.to(**kw),
                        key_ids=key_ids.to(device), stored_keys=K.to(**kw),
                        latest_values=values[last].to(**kw))


def write_memory(method: str, keys: Tensor, values: Tensor, *, eta: float,
                 hebbian_eta: float = 1.0) -> Tensor:
    """Write a (batch of) stream(s) into W = 0 with one rule; keys (S, T, d_k), values (S, T, d_v)
    -> W (S, d_v, d_k). Loops over T, vectorised over S."""
    S, T, d_k = keys.shape
    W = keys.new_zeros(S, values.shape[-1], d_k)  # (S, d_v, d_k)
    for t in range(T):
        k, v = keys[:, t], values[:, t]  # (S, d_k), (S, d_v)
        if method == "hebbian":
            W = hebbian_step(W, k, v, hebbian_eta)  # W + η v kᵀ
        elif method == "gd":
            W = gd_step(W, k, v, eta)  # W − η (W k − v) kᵀ
        elif method == "delta_exact":
            W = proximal_l2_step(W, k, v, eta)  # W − η/(1+η‖k‖²) (W k − v) kᵀ
        elif method == "delta_normalized":
            W = normalized_delta_step(W, k, -v, eta)  # target u = v, i.e. ∇_yL = −v
        else:
            raise ValueError(f"method must be one of {METHODS[:-1]}, got {method!r}")
    return W


def lstsq_memory(stored_keys: Tensor, latest_values: Tensor) -> Tensor:
    """Min-norm least-squares W solving W K = V over the current content (pinv, any load);
    stored_keys (S, n, d_k), latest_values (S, n, d_v) -> (S, d_v, d_k)."""
    return (torch.linalg.pinv(stored_keys) @ latest_values).transpose(-1, -2)  # (Kᵀ)⁺ Vᵀ, ᵀ


def recall_error(W: Tensor, stored_keys: Tensor, latest_values: Tensor) -> Tensor:
    """Mean over stored keys of ‖W k − v‖² / ‖v‖²; returns (S,)."""
    pred = stored_keys @ W.transpose(-1, -2)  # W k for each key: (S, n, d_v)
    err = (pred - latest_values).pow(2).sum(-1) / latest_values.pow(2).sum(-1)  # (S, n)
    return err.mean(-1)


def run_recall_benchmark(d: int = 64, loads=DEFAULT_LOADS, correlation: float = 0.5,
                         overwrite_frac: float = 0.2, seeds=(0, 1, 2), device="cpu",
                         eta: float = 1.0, hebbian_eta: float = 1.0, rank: int | None = None,
                         key_norm_spread: float = 0.0, methods=METHODS,
                         dtype: torch.dtype = torch.float32) -> pd.DataFrame:
    """Recall error per (method, load, seed); tidy columns method, load, seed, metric, value.

    Streams are seeded by (seed, n_keys) only, so a load's data do not depend on the others.
    `eta` is the step of "gd" and the proximal η of both delta rules (normalised: η′ = η/(1+η)).
    """
    if not eta > 0:
        raise ValueError(f"eta must be > 0, got {eta!r}")
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"methods must be a subset of {METHODS}, got {bad!r}")
    rows = []
    for load in loads:
        n = max(1, round(load * d))
        streams = [make_stream(d, n, generator=torch.Generator().manual_seed(s * 100_003 + n),
                               correlation=correlation, rank=rank,
                               overwrite_frac=overwrite_frac, key_norm_spread=key_norm_spread,
                               device=device, dtype=dtype) for s in seeds]
        keys = torch.stack([st.keys for st in streams])  # (S, T, d)
        values = torch.stack([st.values for st in streams])  # (S, T, d)
        K = torch.stack([st.stored_keys for st in streams])  # (S, n, d)
        V = torch.stack([st.latest_values for st in streams])  # (S, n, d)
        with torch.no_grad():
            for method in methods:
                W = (lstsq_memory(K, V) if method == "lstsq" else
                     write_memory(method, keys, values, eta=eta, hebbian_eta=hebbian_eta))
                err = recall_error(W, K, V).cpu().tolist()
                rows += [dict(method=method, load=load, seed=s, metric="recall_error", value=e)
                         for s, e in zip(seeds, err)]
    return pd.DataFrame(rows, columns=["method", "load", "seed", "metric", "value"])
