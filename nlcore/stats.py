r"""Cross-seed statistics: the mean over seeds and its Student-t confidence interval.

A study runs a handful of seeds. The reported 95 % interval of the mean over n seeds is

    \bar x \pm t_{0.975,\, n-1} \, s / \sqrt{n},    s^2 = \frac{1}{n-1} \sum_i (x_i - \bar x)^2

(`t_ci`; t = 4.303 for n = 3). Paired differences (two configurations run on the same seeds and
data order) get the same interval on the per-seed differences (`paired_diff_ci`), which removes
the variation the two share. The percentile bootstrap of the mean (`bootstrap_ci`) is kept for
comparison only: over 3 seeds it spans little more than the seeds themselves and understates the
uncertainty. Every record and legend states n.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

_CHUNK = 1_000_000  # resampled values drawn per batch, to bound memory for long inputs


def _as_1d(values) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).reshape(-1)  # (n,)
    if x.size == 0:
        raise ValueError("need at least one value")
    return x


def _check(n_boot: int, level: float) -> None:
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


def _t_density(x: float, df: float) -> float:
    """The Student-t density with `df` degrees of freedom at x."""
    c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(c - (df + 1) / 2 * math.log1p(x * x / df))


def _t_cdf_above_zero(t: float, df: float, steps: int = 4096) -> float:
    """P(0 <= T <= t) for t >= 0 by composite Simpson's rule on the density (error far below 1e-10
    for the t < 100 that 95 % intervals need)."""
    h = t / steps
    odd = sum(_t_density((2 * i - 1) * h, df) for i in range(1, steps // 2 + 1))
    even = sum(_t_density(2 * i * h, df) for i in range(1, steps // 2))
    return h / 3 * (_t_density(0.0, df) + 4 * odd + 2 * even + _t_density(t, df))


@functools.lru_cache(maxsize=256)
def t_quantile(p: float, df: int) -> float:
    """The p-quantile of the Student-t distribution with `df` >= 1 degrees of freedom (p in (0.5, 1)),
    by bisection on its CDF: 12.706 (df 1), 4.303 (df 2), 2.776 (df 4) for p = 0.975."""
    if not 0.5 < p < 1.0:
        raise ValueError(f"t_quantile: p must be in (0.5, 1), got {p}")
    if df < 1:
        raise ValueError(f"t_quantile: df must be >= 1, got {df}")
    lo, hi = 0.0, 1.0
    while 0.5 + _t_cdf_above_zero(hi, df) < p:
        hi *= 2.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if 0.5 + _t_cdf_above_zero(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _degenerate(x: np.ndarray) -> tuple[float, float, float] | None:
    """The interval where no spread can be estimated: a NaN interval (and non-finite mean) for any
    non-finite value, a NaN interval for one value, a zero-width one for identical values."""
    if not np.all(np.isfinite(x)):
        return float(np.mean(x)), float("nan"), float("nan")
    if x.size == 1:
        return float(x[0]), float("nan"), float("nan")
    if np.all(x == x[0]):
        v = float(x[0])
        return v, v, v
    return None


def t_ci(values, level: float = 0.95) -> tuple[float, float, float]:
    """`(mean, lo, hi)`: the mean of `values` and its Student-t interval (module docstring).

    One value gives `(v, nan, nan)`: there is no spread to estimate. Identical values give
    `lo == hi == mean` exactly. Any NaN or inf among the values (a diverged seed) gives a NaN
    interval and a non-finite mean, so a failure is never averaged away.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    x = _as_1d(values)  # (n,)
    n = x.size
    edge = _degenerate(x)
    if edge is not None:
        return edge
    mean = float(x.mean())
    half = t_quantile(0.5 + level / 2, n - 1) * float(np.std(x, ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half


def bootstrap_ci(
    values, n_boot: int = 10_000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """`(mean, lo, hi)`: the mean of `values` and its percentile-bootstrap CI (for comparison with
    `t_ci`; see the module docstring).

    One value gives `(v, nan, nan)`: there is no spread to resample. Identical values give
    `lo == hi == mean` exactly. Any NaN or inf among the values (a diverged seed) gives a NaN
    interval and a non-finite mean, so a failure is never averaged away.
    """
    _check(n_boot, level)
    x = _as_1d(values)  # (n,)
    n = x.size
    edge = _degenerate(x)
    if edge is not None:
        return edge
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK // n)  # resamples per batch
    means = np.empty(int(n_boot), dtype=np.float64)  # (n_boot,) bootstrap means
    for start in range(0, int(n_boot), rows):
        stop = min(int(n_boot), start + rows)
        idx = rng.integers(0, n, size=(stop - start, n))  # (b, n) resampled indices
        means[start:stop] = x[idx].mean(axis=1)  # \bar x^{*b}
    alpha = 1.0 - level
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])  # percentile interval
    return float(x.mean()), float(lo), float(hi)


def paired_diff_ci(a, b, level: float = 0.95) -> tuple[float, float, float]:
    """`(mean, lo, hi)` of the per-seed difference `a - b` (two configs run on the same seeds): its
    mean and Student-t interval.

    Pairing removes the seed-to-seed variation the two configs share, so the interval on the
    difference is usually much narrower than the two separate intervals suggest.
    `a` and `b` are equal-length sequences in the same seed order, or pandas Series indexed by
    seed (aligned on the index, which must hold the same seeds).
    """
    if isinstance(a, pd.Series) and isinstance(b, pd.Series):
        if set(a.index) != set(b.index) or a.index.has_duplicates or b.index.has_duplicates:
            raise ValueError("paired Series need the same, unique seeds as their index")
        b = b.loc[a.index]
    xa, xb = _as_1d(a), _as_1d(b)
    if xa.shape != xb.shape:
        raise ValueError(f"paired values need equal lengths, got {xa.size} and {xb.size}")
    return t_ci(xa - xb, level=level)


def _py(v):
    """NumPy scalars to plain Python, so records serialise to JSON as they are."""
    return v.item() if isinstance(v, np.generic) else v


def summarize(
    df: pd.DataFrame,
    by: Sequence[str] = ("config",),
    metric_col: str = "metric",
    value_col: str = "value",
    *,
    seed_col: str = "seed",
    step_col: str = "step",
    level: float = 0.95,
) -> list[dict]:
    """One record per (`by`..., metric) over seeds, sorted by those keys.

    Each record: the `by` columns, `metric`, `mean`, `std` (ddof=1; NaN for one seed),
    `ci_low`, `ci_high` (the Student-t interval, `t_ci`), `n_seeds` and `ci_method` ("t95" at
    level 0.95).
    If `df` has a `step` column that is not among `by`, each seed contributes its value at its
    last step (the final value of a curve); put "step" in `by` to summarise every step.
    Two rows for the same seed within a group is an error (it would double-count the seed).
    """
    by = [by] if isinstance(by, str) else list(by)
    needed = [*by, metric_col, value_col, seed_col]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ValueError(f"summarize: missing column(s) {missing}; have {list(df.columns)}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    keys = [*by, metric_col]
    data = df
    if step_col in df.columns and step_col not in by:
        data = data.sort_values(step_col, kind="mergesort", na_position="first")
        data = data.groupby([*keys, seed_col], sort=False, dropna=False).tail(1)  # last step
    data = data.sort_values(seed_col, kind="mergesort")  # values in seed order: row order is moot
    dup = data.duplicated([*keys, seed_col])
    if dup.any():
        first = data.loc[dup, [*keys, seed_col]].iloc[0].to_dict()
        raise ValueError(f"summarize: more than one row per seed, e.g. {first}")
    method = f"t{round(level * 100):d}"
    records = []
    for group_key, group in data.groupby(keys, sort=True, dropna=False):
        group_key = group_key if isinstance(group_key, tuple) else (group_key,)
        values = group[value_col].to_numpy(dtype=np.float64)  # (n_seeds,)
        mean, lo, hi = t_ci(values, level=level)
        record = {k: _py(v) for k, v in zip(keys, group_key)}
        record["metric"] = record.pop(metric_col)
        record.update(
            mean=mean,
            std=float(np.std(values, ddof=1)) if values.size > 1 else float("nan"),
            ci_low=lo,
            ci_high=hi,
            n_seeds=int(group[seed_col].nunique()),
            ci_method=method,
        )
        records.append(record)
    return records
