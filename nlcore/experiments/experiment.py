"""A registered experiment as data: configurations x seeds, per mode, as `run_grid` runs them.

An experiment's configurations name the levers they move (`Levers`: `key=value` overrides of
the lever itself, the model whose size they take, the long window, the training budget); each
mode (`Mode`: smoke, full) holds the base preset, the seeds and every number that differs between
the modes (steps, warm-up, window, batch, corpus size, each model's size, `ModelSize`, each
budget's steps, the corpus where smoke reads the synthetic one in its place). Both modes render
their numbers and the levers through the same code (`Experiment.grid`), so smoke is the full
experiment with smaller numbers. The `key=value` form is what `run_grid` hands to each run
(`python -m nlcore train --set ...` when runs are subprocesses).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nlcore.experiments.grid import GridConfig, PhaseB
from nlcore.paths import MODES


def _check(cond: bool, name: str, msg: str) -> None:
    if not cond:
        raise ValueError(f"{name}: {msg}")


@dataclass(frozen=True)
class ModelSize:
    """A model's size in one mode; None keeps the preset's value."""

    d_model: int
    d_ff: int
    n_layers: int | None = None
    n_heads: int | None = None
    cms_chunks: tuple[int, ...] | None = None  # HOPE: the chain's chunks in tokens, fast to slow

    def overrides(self) -> tuple[str, ...]:
        chunks = None if self.cms_chunks is None else ",".join(str(c) for c in self.cms_chunks)
        values = (("d_model", self.d_model), ("d_ff", self.d_ff), ("n_layers", self.n_layers),
                  ("n_heads", self.n_heads), ("cms_chunks", chunks))
        return tuple(f"model.{k}={v}" for k, v in values if v is not None)


@dataclass(frozen=True)
class Mode:
    """One mode of an experiment: base preset, seeds, which configurations run, and the numbers
    it sets on every run (None keeps the preset's value)."""

    preset: str
    seeds: tuple[int, ...]
    labels: tuple[str, ...] | None = None  # the configurations that run (None: every one)
    steps: int | None = None
    warmup: int | None = None
    seq_len: int | None = None  # data.seq_len, the window T
    batch_size: int | None = None  # data.batch_size, the rows B
    synth_chars: int | None = None  # data.synth_chars, the synthetic corpus' train characters
    mem_chunk: int | None = None  # model.mem_chunk, the memories' chunk in tokens
    long_seq_len: int | None = None  # data.seq_len of the configurations with Levers.long_window
    sizes: dict[str, ModelSize] = field(default_factory=dict)  # per model of Experiment.models
    phase_b: PhaseB | None = None  # every run is a continual-learning probe continuing on this corpus
    budgets: dict[str, int] = field(default_factory=dict)  # budget name -> steps (Levers.budget)
    corpus: str | None = None  # data.corpus of every run (smoke: the synthetic stand-in)

    def overrides(self) -> tuple[str, ...]:
        """The numbers every run of this mode sets, as `key=value`."""
        values = (("steps", self.steps), ("warmup", self.warmup), ("data.seq_len", self.seq_len),
                  ("data.batch_size", self.batch_size), ("data.synth_chars", self.synth_chars),
                  ("model.mem_chunk", self.mem_chunk), ("data.corpus", self.corpus))
        return tuple(f"{k}={v}" for k, v in values if v is not None)


@dataclass(frozen=True)
class Levers:
    """What one configuration changes on its experiment's base, the same in every mode."""

    overrides: tuple[str, ...] = ()  # `key=value` on the preset (nlcore.config.apply_overrides)
    model: str | None = None  # a key of Experiment.models: that model, at the mode's size of it
    long_window: bool = False  # train on windows of the mode's long_seq_len
    budget: str | None = None  # a key of Mode.budgets: train for that many steps (its own schedule)


def config(label: str, *overrides: str, model: str | None = None, long_window: bool = False,
           budget: str | None = None) -> tuple[str, Levers]:
    """A named configuration: (label, its levers)."""
    return label, Levers(tuple(overrides), model, long_window, budget)


@dataclass(frozen=True)
class Experiment:
    """A notebook's experiment: configurations (label, levers) run under each mode's numbers.

    A run's overrides are, in order: the mode's numbers and the experiment's `common` levers,
    then the configuration's model (identity from `models`, size from the mode), its own
    overrides, its long window and its budget's steps; a later override of the same key wins.
    """

    stem: str
    configs: tuple[tuple[str, Levers], ...]
    full: Mode = Mode("seed", seeds=(0, 1, 2))
    smoke: Mode = Mode("smoke", seeds=(0,))
    common: tuple[str, ...] = ()  # levers of every configuration
    models: dict[str, tuple[str, ...]] = field(default_factory=dict)  # model -> the overrides naming it

    @property
    def labels(self) -> list[str]:
        """Every configuration's label, in registry order."""
        return [label for label, _ in self.configs]

    def mode(self, mode: str) -> Mode:
        _check(mode in MODES, "mode", f"must be one of {MODES}, got {mode!r}")
        return self.full if mode == "full" else self.smoke

    def validate(self) -> Experiment:
        labels = self.labels
        _check(len(set(labels)) == len(labels), f"{self.stem}.configs", f"duplicate labels in {labels}")
        for name in MODES:
            m = self.mode(name)
            _check(bool(m.seeds), f"{self.stem}.{name}.seeds", "need at least one seed")
            unknown = sorted(set(m.labels or ()) - set(labels))
            _check(not unknown, f"{self.stem}.{name}.labels", f"unknown configurations {unknown}")
            for label, lv in self.configs:
                if m.labels is not None and label not in m.labels:
                    continue
                if lv.model is not None:
                    _check(lv.model in self.models, f"{self.stem}.configs.{label}.model",
                           f"unknown model {lv.model!r}; models are {sorted(self.models)}")
                    _check(lv.model in m.sizes, f"{self.stem}.{name}.sizes", f"no size for model {lv.model!r}")
                _check((m.phase_b is None) == (self.smoke.phase_b is None), f"{self.stem}.{name}.phase_b",
                       "set it in both modes or in neither")
                _check(not lv.long_window or m.long_seq_len is not None, f"{self.stem}.{name}.long_seq_len",
                       f"configuration {label!r} trains on the long window: set it")
                _check(lv.budget is None or lv.budget in m.budgets, f"{self.stem}.{name}.budgets",
                       f"configuration {label!r} trains for budget {lv.budget!r}: set its steps")
        return self

    def overrides(self, levers: Levers, mode: str) -> tuple[str, ...]:
        """The overrides of one configuration in `mode`, after the mode's common ones."""
        m = self.mode(mode)
        model = (*self.models[levers.model], *m.sizes[levers.model].overrides()) if levers.model else ()
        window = (f"data.seq_len={m.long_seq_len}",) if levers.long_window else ()
        budget = (f"steps={m.budgets[levers.budget]}",) if levers.budget else ()
        return (*model, *levers.overrides, *window, *budget)

    def grid(self, mode: str) -> tuple[list[GridConfig], list[int], tuple[str, ...]]:
        """(configurations, seeds, common overrides) of `mode`, as `run_grid` takes them."""
        m = self.mode(mode)
        gcs = [GridConfig(label, m.preset, self.overrides(lv, mode))
               for label, lv in self.configs if m.labels is None or label in m.labels]
        return gcs, list(m.seeds), (*m.overrides(), *self.common)
