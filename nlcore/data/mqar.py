r"""Multi-query associative recall (MQAR): a seeded synthetic recall task drawn on the device.

Arora et al., "Zoology: Measuring and Improving Recall in Efficient Language Models"
(ICLR 2024), §3: a sequence first lists P key-value pairs, then queries every key once more;
at each query the model must emit the value paired with that key earlier in the sequence.
A model with a fixed-size state has to store all P pairs to do so, which is what separates
attention from recurrent and fast-weight memories as P and the sequence length grow.

Vocabulary (V = n_keys + n_values + n_noise token ids):

    [0, n_keys)                                  keys
    [n_keys, n_keys + n_values)                  values
    [n_keys + n_values, V)                       filler (noise)

A row of length L, with P = n_pairs, distinct keys k_1..k_P and values v_1..v_P:

    x = k_1 v_1 k_2 v_2 ... k_P v_P | f .. f k_{π(1)} v_{π(1)} f .. f k_{π(2)} v_{π(2)} f ..
        \----- context: 2P -------/  \-------------- query region: L - 2P ---------------/

Every key is queried exactly once, in a random order π, at a uniformly random non-overlapping
position of the query region; the query key is followed by its value (as in Zoology, the input
after a query is the answer). Filler positions hold ids drawn uniformly from the noise range.
The target is y[t] = v_i where x[t] is the query of k_i and IGNORE (-100) everywhere else, so
each row has exactly P targets. Keys are drawn without replacement, values with replacement.

Query positions: pick P of the R - P slots (R = L - 2P) without replacement, sort them
(j_1 < ... < j_P) and place query i at offset j_i + (i - 1); consecutive offsets then differ by
at least 2, so key/value blocks never overlap, and every such placement is equally likely.

Everything is vectorised over rows and positions and drawn from an explicit `torch.Generator`
on that generator's device, so the data do not depend on model initialisation or on the order
in which other code draws random numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

IGNORE = -100  # target of positions that are not queries: F.cross_entropy's default ignore_index, so the loss skips them
SPLITS = ("train", "test")
_SEED_BASE = 0x6D716172  # "mqar": keeps the data streams apart from torch.manual_seed(seed)


@dataclass(frozen=True)
class MQARSpec:
    """Shape of the task; validated on construction (errors name the field)."""

    seq_len: int = 256  # L
    n_pairs: int = 16  # P key-value pairs per row, each queried once
    n_keys: int = 256  # key ids [0, n_keys)
    n_values: int = 256  # value ids [n_keys, n_keys + n_values)
    n_noise: int = 1  # filler ids after the values (1: a single constant filler token)

    def __post_init__(self) -> None:
        for name in ("seq_len", "n_pairs", "n_keys", "n_values", "n_noise"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: must be an int >= 1, got {v!r}")
        if self.n_keys < self.n_pairs:
            raise ValueError(f"n_keys: need n_keys >= n_pairs = {self.n_pairs} (keys are distinct "
                             f"within a row), got {self.n_keys}")
        if self.seq_len < 4 * self.n_pairs:
            raise ValueError(f"seq_len: need seq_len >= 4 * n_pairs = {4 * self.n_pairs} (2P context "
                             f"tokens plus room for P query blocks of 2), got {self.seq_len}")

    @property
    def vocab_size(self) -> int:
        return self.n_keys + self.n_values + self.n_noise

    @property
    def value_offset(self) -> int:
        return self.n_keys

    @property
    def noise_offset(self) -> int:
        return self.n_keys + self.n_values


class MQARBatch(NamedTuple):
    x: torch.Tensor  # (B, L) int64 input ids
    y: torch.Tensor  # (B, L) int64 targets: the value at query positions, IGNORE elsewhere


def split_generator(seed: int, split: str, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on `device` seeded by (seed, split) only: seed' = base + 2 seed + index(split)."""
    if split not in SPLITS:
        raise ValueError(f"split: must be one of {SPLITS}, got {split!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: must be an int >= 0, got {seed!r}")
    g = torch.Generator(device=torch.device(device))
    return g.manual_seed(_SEED_BASE + 2 * seed + SPLITS.index(split))


def _distinct(batch: int, n: int, k: int, g: torch.Generator) -> torch.Tensor:
    """(batch, k) indices drawn without replacement from range(n), independently per row."""
    u = torch.rand(batch, n, generator=g, device=g.device)  # (B, n) random priorities
    return u.argsort(dim=-1, stable=True)[:, :k]  # the k lowest: a uniform k-subset, in random order


def generate(spec: MQARSpec, batch_size: int, generator: torch.Generator) -> MQARBatch:
    """`batch_size` fresh rows, drawn on `generator.device` (see the module docstring)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: must be an int >= 1, got {batch_size!r}")
    g, dev = generator, generator.device
    B, L, P = batch_size, spec.seq_len, spec.n_pairs
    R = L - 2 * P  # length of the query region

    keys = _distinct(B, spec.n_keys, P, g)  # (B, P) distinct key ids
    values = spec.value_offset + torch.randint(spec.n_values, (B, P), generator=g, device=dev)  # (B, P)
    x = spec.noise_offset + torch.randint(spec.n_noise, (B, L), generator=g, device=dev)  # (B, L) filler
    x[:, 0:2 * P:2] = keys  # context: k_1 _ k_2 _ ...
    x[:, 1:2 * P:2] = values  # context: _ v_1 _ v_2 ...

    slots = _distinct(B, R - P, P, g).sort(dim=-1).values  # (B, P) sorted j_1 < ... < j_P
    offsets = slots + torch.arange(P, device=dev)  # (B, P) j_i + (i-1): gaps >= 2, max R - 2
    qpos = 2 * P + offsets  # (B, P) positions of the query keys
    order = _distinct(B, P, P, g)  # (B, P) π: which pair is queried at the i-th position
    qkeys, qvalues = keys.gather(1, order), values.gather(1, order)  # (B, P) each
    x.scatter_(1, qpos, qkeys)  # the query key ...
    x.scatter_(1, qpos + 1, qvalues)  # ... followed by its value
    y = torch.full((B, L), IGNORE, dtype=torch.long, device=dev)  # (B, L)
    y.scatter_(1, qpos, qvalues)  # target at a query: its value
    return MQARBatch(x, y)


def held_out(spec: MQARSpec, n_sequences: int, seed: int, device: torch.device | str = "cpu",
             chunk: int = 1024) -> MQARBatch:
    """The fixed test rows of `seed`: drawn on the CPU (so identical on every device) from the
    "test" generator, `chunk` rows at a time, then moved to `device`."""
    if isinstance(n_sequences, bool) or not isinstance(n_sequences, int) or n_sequences < 1:
        raise ValueError(f"n_sequences: must be an int >= 1, got {n_sequences!r}")
    g = split_generator(seed, "test", "cpu")
    parts = [generate(spec, min(chunk, n_sequences - i), g) for i in range(0, n_sequences, chunk)]
    return MQARBatch(*(torch.cat(t).to(device) for t in zip(*parts)))
