r"""Embedded synthetic corpus with a KNOWN entropy rate and long-range structure.

The text is a sequence of i.i.d. episodes

    ``[`` k ``]`` b_1 ... b_L ``{`` k ``}`` ``\n``

- the key k is uniform over ``n_keys`` digits ``'0'..``;
- the body length L is uniform on ``{gap_min, ..., gap_max}``;
- the body b is an order-1 Markov chain over ``alphabet_size`` letters ``'a'..``: b_1 ~ pi
  (the stationary distribution), b_{j+1} ~ P[b_j, :], where every row of P is drawn from a
  symmetric Dirichlet(``concentration``) (one P per seed, shared by all splits);
- the closing key repeats the opening one, so it is predictable only by remembering it
  across the whole body (choose ``gap_min`` larger than the training window, so carried
  state is needed).

Markers ``[ ] { } \n`` and digits never occur in the body, so the parse is recoverable.

Entropy rate (renewal-reward theorem; episodes are i.i.d. and everything not listed below
is a deterministic function of the past):

.. math::

    H_{rate} = \frac{E[H(\text{episode})]}{E[|\text{episode}|]}, \quad
    E[H(\text{episode})] = \log_2 n_{keys} + H(L) + H(\pi) + (E[L]-1)\, h_P, \quad
    h_P = \sum_i \pi_i H(P_{i\cdot}),\quad E[|\text{episode}|] = E[L] + 7.

Per character, the optimal predictor pays -log2(1 - h(j)) - log2 P(b | prev) for a body
character after j body characters, and -log2 h(L) for ``{``, with the hazard
h(j) = P(L = j | L >= j); summed over an episode these give H(L) + H(b | L). A *forgetful*
predictor (no memory of the key) also pays log2(n_keys) at the closing key: the bpc gap
log2(n_keys) / E[|episode|] is what carried state can close.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPLITS = ("train", "valid", "test")
LETTERS = "abcdefghijklmnopqrstuvwxyz"
DIGITS = "0123456789"
OPEN, OPEN_END, CLOSE, CLOSE_END, EOL = "[", "]", "{", "}", "\n"
_EXTRA = 7  # non-body characters per episode: [ k ] { k } \n
_MATRIX_STREAM = 99  # rng stream index of the transition matrix


def _entropy_bits(p: np.ndarray) -> np.ndarray:
    """Shannon entropy (bits) along the last axis, with 0 log 0 = 0."""
    logp = np.log2(np.where(p > 0, p, 1.0))
    return -(p * logp).sum(axis=-1)


@dataclass(frozen=True)
class SyntheticSpec:
    """Parameters of the synthetic key-recall Markov corpus (see the module docstring)."""

    seed: int = 0
    n_chars: tuple[int, int, int] = (200_000, 20_000, 20_000)  # train / valid / test
    alphabet_size: int = 24  # body letters 'a'..
    concentration: float = 0.3  # Dirichlet concentration of each row of P
    n_keys: int = 8  # key digits '0'..
    gap_min: int = 48  # body length L ~ Uniform{gap_min..gap_max}
    gap_max: int = 96

    def __post_init__(self) -> None:
        def is_int(v: object) -> bool:
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        if not is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")
        n = self.n_chars
        if not isinstance(n, (tuple, list)) or len(n) != 3 or not all(is_int(v) and v >= 1 for v in n):
            raise ValueError(f"n_chars must be 3 positive ints (train, valid, test), got {n!r}")
        object.__setattr__(self, "n_chars", tuple(int(v) for v in n))
        if not is_int(self.alphabet_size) or not 2 <= self.alphabet_size <= len(LETTERS):
            raise ValueError(f"alphabet_size must be an int in [2, 26], got {self.alphabet_size!r}")
        if not isinstance(self.concentration, (int, float)) or not self.concentration > 0:
            raise ValueError(f"concentration must be a float > 0, got {self.concentration!r}")
        if not is_int(self.n_keys) or not 1 <= self.n_keys <= len(DIGITS):
            raise ValueError(f"n_keys must be an int in [1, 10], got {self.n_keys!r}")
        if not is_int(self.gap_min) or self.gap_min < 1:
            raise ValueError(f"gap_min must be an int >= 1, got {self.gap_min!r}")
        if not is_int(self.gap_max) or self.gap_max < self.gap_min:
            raise ValueError(f"gap_max must be an int >= gap_min={self.gap_min}, got {self.gap_max!r}")

    # ---- the process ----------------------------------------------------------------------
    def transition_matrix(self) -> np.ndarray:
        """P (A, A): row i is the distribution of the letter after letter i."""
        rng = np.random.default_rng([self.seed, _MATRIX_STREAM])
        a = self.alphabet_size
        P = rng.dirichlet(np.full(a, float(self.concentration)), size=a)  # (A, A)
        return P / P.sum(axis=1, keepdims=True)

    def stationary(self, P: np.ndarray | None = None) -> np.ndarray:
        """pi (A,): the stationary distribution, pi P = pi."""
        P = self.transition_matrix() if P is None else P
        a = P.shape[0]
        M = P.T - np.eye(a)  # (A, A): (P^T - I) pi = 0
        M[-1, :] = 1.0  # replace one equation by sum(pi) = 1
        b = np.zeros(a)
        b[-1] = 1.0
        pi = np.clip(np.linalg.solve(M, b), 0.0, None)
        return pi / pi.sum()

    def hazard(self) -> np.ndarray:
        """h (gap_max + 1,): h[j] = P(L = j | L >= j), the chance the body stops after j letters."""
        j = np.arange(self.gap_max + 1)
        return np.where(j >= self.gap_min, 1.0 / (self.gap_max - j + 1.0), 0.0)

    def mean_episode_len(self) -> float:
        return (self.gap_min + self.gap_max) / 2 + _EXTRA  # E[L] + 7

    def _episode_entropy_bits(self) -> float:
        P = self.transition_matrix()
        pi = self.stationary(P)
        h_P = float(pi @ _entropy_bits(P))  # sum_i pi_i H(P_i.)
        mean_L = (self.gap_min + self.gap_max) / 2
        return (
            np.log2(self.n_keys)  # opening key
            + np.log2(self.gap_max - self.gap_min + 1)  # H(L): where the body stops
            + float(_entropy_bits(pi))  # first body letter ~ pi
            + (mean_L - 1) * h_P  # the remaining letters, Markov
        )

    def entropy_rate_bits(self) -> float:
        """Exact entropy rate of the process in bits per character."""
        return float(self._episode_entropy_bits() / self.mean_episode_len())

    def forgetful_rate_bits(self) -> float:
        """Rate of the optimal predictor that forgets the key: + log2(n_keys) per episode."""
        return float((self._episode_entropy_bits() + np.log2(self.n_keys)) / self.mean_episode_len())

    def describe(self) -> str:
        return (
            f"synthetic key-recall Markov corpus (seed={self.seed}, n_chars={self.n_chars}, "
            f"alphabet_size={self.alphabet_size}, concentration={self.concentration}, "
            f"n_keys={self.n_keys}, gap={self.gap_min}..{self.gap_max})"
        )


def _split_index(split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return SPLITS.index(split)


def generate(spec: SyntheticSpec, split: str) -> str:
    """The `split` text: exactly ``spec.n_chars[split]`` characters, starting at an episode."""
    idx = _split_index(split)
    n_chars = spec.n_chars[idx]
    rng = np.random.default_rng([spec.seed, idx])
    P = spec.transition_matrix()
    pi = spec.stationary(P)
    cum_P = np.cumsum(P, axis=1)  # (A, A) row CDFs
    cum_pi = np.cumsum(pi)  # (A,)
    A, G = spec.alphabet_size, spec.gap_max
    n_ep = n_chars // (spec.gap_min + _EXTRA) + 1  # enough episodes to cover n_chars

    keys = rng.integers(spec.n_keys, size=n_ep)  # (E,)
    L = rng.integers(spec.gap_min, spec.gap_max + 1, size=n_ep)  # (E,)
    u = rng.random((n_ep, G))  # (E, G) uniforms for inverse-CDF sampling
    body = np.empty((n_ep, G), dtype=np.int64)  # (E, G) letters; all episodes in parallel
    body[:, 0] = np.minimum(np.searchsorted(cum_pi, u[:, 0], side="right"), A - 1)
    for j in range(1, G):
        rows = cum_P[body[:, j - 1]]  # (E, A) CDF of the next letter
        body[:, j] = np.minimum((rows <= u[:, j, None]).sum(axis=1), A - 1)

    W = G + _EXTRA
    codes = np.zeros((n_ep, W), dtype=np.uint8)  # (E, W) ASCII codes, 0 = padding
    letters = np.frombuffer(LETTERS.encode(), np.uint8)
    key_codes = np.frombuffer(DIGITS.encode(), np.uint8)[keys]  # (E,)
    codes[:, 0], codes[:, 1], codes[:, 2] = ord(OPEN), key_codes, ord(OPEN_END)
    col = np.arange(G)[None, :]  # (1, G)
    codes[:, 3:3 + G] = np.where(col < L[:, None], letters[body], 0)
    r = np.arange(n_ep)
    for k, c in enumerate((ord(CLOSE), None, ord(CLOSE_END), ord(EOL))):
        codes[r, 3 + L + k] = key_codes if c is None else c
    flat = codes[codes != 0]  # row-major: episodes in order
    assert len(flat) >= n_chars
    return flat[:n_chars].tobytes().decode("ascii")


def episode_starts(text: str) -> np.ndarray:
    """(N,) bool: True at each ``[`` (every episode start)."""
    return np.frombuffer(text.encode("utf-32-le"), "<u4") == ord(OPEN)


def _log2_probs(spec: SyntheticSpec, text: str, remember_key: bool) -> np.ndarray:
    """(N-1,) log2 p(c_t | c_<t) of the exact predictor for t = 1..N-1; validates the parse."""
    c = np.frombuffer(text.encode("utf-32-le"), "<u4").astype(np.int64)  # (N,)
    N = len(c)
    if N < 2:
        raise ValueError(f"text must have at least 2 characters, got {N}")
    if c[0] != ord(OPEN):
        raise ValueError("text must start at an episode start ('[')")

    starts = np.flatnonzero(c == ord(OPEN))  # (E,)
    ep = np.cumsum(c == ord(OPEN)) - 1  # (N,) episode of each position
    off = np.arange(N) - starts[ep]  # (N,) offset inside the episode
    n_ep = len(starts)
    ends = np.append(starts[1:], N)  # (E,) one past each episode
    braces = np.flatnonzero(c == ord(CLOSE))
    L = ends - starts - 3  # (E,) body length if no '{' yet (last, truncated episode)
    if len(np.unique(ep[braces])) != len(braces):
        raise ValueError("malformed text: an episode has more than one '{'")
    L[ep[braces]] = braces - starts[ep[braces]] - 3
    complete = np.zeros(n_ep, bool)
    complete[ep[braces]] = True
    if not complete[:-1].all():
        bad = int(starts[np.flatnonzero(~complete[:-1])[0]])
        raise ValueError(f"malformed text: episode at character {bad} has no '{{'")
    if (L[complete] < spec.gap_min).any() or (L > spec.gap_max).any():
        raise ValueError(f"malformed text: a body length falls outside [{spec.gap_min}, {spec.gap_max}]")

    j = off - 3  # (N,) body position (j = L is the '{')
    Lt = L[ep]  # (N,)
    expected_ok = np.ones(N, bool)
    is_key = off == 1
    is_body = (j >= 0) & (j < Lt)
    is_close_key = j == Lt + 1
    expected_ok &= ~(off == 0) | (c == ord(OPEN))
    expected_ok &= ~is_key | ((c >= ord("0")) & (c < ord("0") + spec.n_keys))
    expected_ok &= ~(off == 2) | (c == ord(OPEN_END))
    expected_ok &= ~is_body | ((c >= ord("a")) & (c < ord("a") + spec.alphabet_size))
    expected_ok &= ~(j == Lt) | (c == ord(CLOSE))
    expected_ok &= ~is_close_key | (c == c[np.minimum(starts[ep] + 1, N - 1)])
    expected_ok &= ~(j == Lt + 2) | (c == ord(CLOSE_END))
    expected_ok &= ~(j == Lt + 3) | (c == ord(EOL))
    expected_ok &= j <= Lt + 3
    if not expected_ok.all():
        t = int(np.flatnonzero(~expected_ok)[0])
        raise ValueError(f"malformed text at character {t} ({text[t]!r}) for this SyntheticSpec")

    P = spec.transition_matrix()
    pi = spec.stationary(P)
    h = spec.hazard()  # (G+1,)
    logp = np.zeros(N)  # (N,) log2 p of each character; deterministic ones stay 0
    logp[is_key] = -np.log2(spec.n_keys)  # opening key: uniform
    if not remember_key:
        logp[is_close_key] = -np.log2(spec.n_keys)  # forgetful: the closing key is a guess
    b = np.flatnonzero(is_body)  # body positions
    letter = c[b] - ord("a")
    first = j[b] == 0
    with np.errstate(divide="ignore"):
        prev = np.where(first, 0, c[b - 1] - ord("a"))  # previous letter (unused when first)
        p_letter = np.where(first, pi[letter], P[prev, letter])
        logp[b] = np.log2(1.0 - h[j[b]]) + np.log2(p_letter)  # continue, then which letter
        br = np.flatnonzero(j == Lt)  # the '{' positions
        logp[br] = np.log2(h[j[br]])  # the body stops here
    return logp[1:]


def optimal_log_loss_bits(spec: SyntheticSpec, text: str) -> float:
    """Mean -log2 p(c_t | c_<t) of the exact optimal predictor over characters 1..N-1."""
    return float(-_log2_probs(spec, text, remember_key=True).mean())


def forgetful_log_loss_bits(spec: SyntheticSpec, text: str) -> float:
    """As :func:`optimal_log_loss_bits` but without memory of the key (uniform closing key)."""
    return float(-_log2_probs(spec, text, remember_key=False).mean())
