"""The registered experiments: each notebook's configurations and seeds, per mode.

Every entry is an `Experiment` (nlcore.experiments.experiment): the configurations as the levers
they move, and per mode the preset, the seeds and the numbers (a `Mode`). FULL runs on a GPU
through `python -m nlcore experiment NN --mode full`, writing the committed results/<stem>/;
SMOKE runs the same levers with smaller numbers, in-process on a CPU.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd

from nlcore.errors import RunDirError
from nlcore.experiments.experiment import Experiment, Levers, Mode, ModelSize, config
from nlcore.experiments.grid import PhaseB, aggregate, run_grid

# Levers shared by several configurations.
_ADAMW_FFN = ("cms.levels.medium.optimizer=adamw", "cms.levels.slow.optimizer=adamw",
              "cms.levels.medium.lr=5e-3", "cms.levels.slow.lr=5e-3")
_PROTO_SCHEDULE = ("cms.levels.fast.optimizer=adam", "cms.levels.medium.optimizer=adam",
                   "cms.levels.slow.optimizer=adam", "cms.levels.fast.lr=3e-4", "cms.levels.medium.lr=3e-4",
                   "cms.levels.slow.lr=3e-4", "cms.lr_policy=divide_by_chunk", "cms.aggregation=sum",
                   "cms.grad_clip=0", "schedule=constant", "warmup=0")
_PROTOTYPE = ("compat=prototype", "model.norm_residual=false", "model.zero_init_ffn_out=false",
              "model.activation=relu", *_PROTO_SCHEDULE)
_SURPRISE = ("surprise.weights.fast=0.05", "surprise.weights.medium=0.01")
# Residual FFN branches start as the identity map, the initialisation of the committed 01-04 runs;
# the presets initialise them randomly (results/01_cms/NOTE.md).
_ZERO = ("model.zero_init_ffn_out=true",)


def _chunks(m: int, s: int) -> tuple[str, ...]:
    return (f"cms.levels.medium.chunk={m}", f"cms.levels.slow.chunk={s}")


def _rows(prefix: str, base: tuple[str, ...]) -> tuple[tuple[str, Levers], ...]:
    """The prototype's headline-table rows (plus document resets and hierarchical state)."""
    return (
        config(f"{prefix}reset_every_batch", *base, "state.reset=every_batch"),
        config(f"{prefix}persistent", *base, "state.reset=never"),
        config(f"{prefix}persistent_surprise", *base, "state.reset=never", *_SURPRISE),
        config(f"{prefix}persistent_512", *base, "state.reset=never", long_window=True),
        config(f"{prefix}persistent_doc_resets", *base, "state.reset=doc"),
        config(f"{prefix}persistent_hierarchical", *base, "state.reset=never", "model.hierarchical_state=true"),
    )


_SURPRISE_02 = (
    ("none", ()),
    ("w0.05_0.01", ("surprise.weights.fast=0.05", "surprise.weights.medium=0.01")),
    ("w0.1_0.05", ("surprise.weights.fast=0.1", "surprise.weights.medium=0.05")),
    ("w0.3_0.1", ("surprise.weights.fast=0.3", "surprise.weights.medium=0.1")),
    ("fast_only_0.3", ("surprise.weights.fast=0.3",)),
    ("cheap_0.05_every4", ("surprise.weights.fast=0.05", "surprise.every=4")),
)
_DELTA = ("cms.levels.medium.optimizer=delta", "cms.levels.slow.optimizer=delta")
_DELTA_BATCH_MEAN = ("cms.levels.medium.optimizer=delta_batch_mean", "cms.levels.slow.optimizer=delta_batch_mean")


def _ffn_lr(lr: str) -> tuple[str, ...]:
    return (f"cms.levels.medium.lr={lr}", f"cms.levels.slow.lr={lr}")


EXPERIMENTS: dict[str, Experiment] = {
    # Every configuration but "default" pins zero-initialised FFN outputs, the initialisation of its
    # committed runs; "default" takes the preset's (results/01_cms/NOTE.md).
    "01_cms": Experiment("01_cms", (
        config("default"),
        config("zero_init_ffn", *_ZERO),
        config("all_adamw", *_ZERO, *_ADAMW_FFN),
        config("adam_lr_div_chunk", *_ZERO, *_ADAMW_FFN, "cms.lr_policy=divide_by_chunk"),
        config("chunks_1_4_16", *_ZERO, *_chunks(4, 16)),
        config("chunks_1_2_4", *_ZERO, *_chunks(2, 4)),
        config("cms_off", *_ZERO, *_ADAMW_FFN, *_chunks(1, 1)),
        config("no_norm_residual", "model.norm_residual=false"),
    )),
    # Which activation the prototype used is unknown: GELU beside the ReLU of the 03 rows.
    "prototype_match": Experiment("prototype_match", (
        config("prototype_relu_persistent", *_PROTOTYPE, "state.reset=never"),
        config("prototype_gelu_persistent", *_PROTOTYPE, "state.reset=never", "model.activation=gelu"),
    )),
    # The surprise weights on two corpora; in full the synthetic corpus has 2 M train characters.
    "02_surprise": Experiment("02_surprise", tuple(
        config(f"{corpus}_{label}", f"data.corpus={corpus}", *ov)
        for corpus in ("wikitext2", "synthetic") for label, ov in _SURPRISE_02),
        full=Mode("seed", seeds=(0, 1, 2), synth_chars=2_000_000),
        smoke=Mode("smoke", seeds=(0,), labels=tuple(f"synthetic_{x}" for x in ("none", "w0.05_0.01", "fast_only_0.3"))),
        common=_ZERO),
    # The long window ("persistent_512") is twice the preset's: 512 characters in full, 64 in smoke.
    "03_persistent_state": Experiment(
        "03_persistent_state", _rows("", ()) + _rows("prototype_", _PROTOTYPE),
        full=Mode("seed", seeds=(0, 1, 2), long_seq_len=512), smoke=Mode("smoke", seeds=(0,), long_seq_len=64),
        common=_ZERO),
    "04_delta_rule": Experiment("04_delta_rule", (
        config("sgd_default"),
        config("adamw", *_ADAMW_FFN),
        config("delta", *_DELTA, *_ffn_lr("0.5")),
        config("delta_lr0.1", *_DELTA, *_ffn_lr("0.1")),
        config("delta_batch_mean", *_DELTA_BATCH_MEAN, *_ffn_lr("0.5")),
    ), common=_ZERO),
}


# 06: four models at matched parameters and matched characters (full: 1000 steps of 16 x 512
# characters, 0.76 of an epoch of WikiText-2; parameter counts in results/06_hope_titans/NOTE.md).
# Every parameter of the three new models is in the fast level (AdamW, `lr`); the nested LSTM
# keeps its tuned CMS policy, so its AdamW lr applies to the fast level only.
MODELS_06 = {
    "nested_lstm": (),
    "transformer": ("model.kind=transformer",),
    "titans": ("model.kind=titans", "model.memory=mlp"),
    "hope": ("model.kind=hope", "model.cms_mode=in_forward"),
}
SIZES_06 = {
    "full": {"nested_lstm": ModelSize(d_model=416, d_ff=1024),
             "transformer": ModelSize(d_model=256, d_ff=1024, n_layers=4, n_heads=4),
             "titans": ModelSize(d_model=256, d_ff=768, n_layers=4, n_heads=4),
             "hope": ModelSize(d_model=256, d_ff=448, n_layers=4, n_heads=4, cms_chunks=(64, 256))},
    "smoke": {"nested_lstm": ModelSize(d_model=32, d_ff=64),
              "transformer": ModelSize(d_model=32, d_ff=64, n_layers=1, n_heads=2),
              "titans": ModelSize(d_model=32, d_ff=64, n_layers=1, n_heads=2),
              "hope": ModelSize(d_model=32, d_ff=64, n_layers=1, n_heads=2, cms_chunks=(16, 32))},
}
# Not tuned per model: the nested LSTM keeps its tuned default, the others take 2e-3.
LR_06 = {"nested_lstm": 5e-3, "transformer": 2e-3, "titans": 2e-3, "hope": 2e-3}


def _lr(model: str) -> tuple[str, ...]:
    return (f"cms.levels.fast.lr={LR_06[model]:g}",)


# The Titans MLP memory with each token's inner gradient divided by its curvature bound, retention
# toward the initial weights and a write step of at most 0.5 (chosen on valid bpc: the search in
# results/06_hope_titans_extra/). 06's `titans` retains toward zero with a step of at most 1/mem_chunk.
TITANS_NORM = ("model.mem_retention=init", "model.mem_normalize=true", "model.mem_step_max=0.5")
# TITANS_NORM with the carried memory kept, at each chunk's end, within half its initial weights'
# norm of them (`model.mem_state_max`; why: results/06_hope_titans/NOTE.md).
TITANS_CAP = (*TITANS_NORM, "model.mem_state_max=0.5")

# HOPE's chain MLPs as the CMS levels medium and slow (nlcore.cms), updated every 16 and 256 steps.
_OUTER = ("model.cms_mode=outer", "cms.levels.medium.chunk=16", "cms.levels.slow.chunk=256")
_FFN_ADAMW_2E3 = (*_ADAMW_FFN[:2], *_ffn_lr("2e-3"))

EXPERIMENTS["06_hope_titans"] = Experiment("06_hope_titans", (
    *(config(m, *_lr(m), model=m) for m in MODELS_06),
    config("hope_outer", *_OUTER, *_lr("hope"), model="hope"),
    config("hope_no_momentum", "model.momentum=false", *_lr("hope"), model="hope"),
    # The in-forward writes taught by each layer's own loss through the shared head, not the model's
    # (`model.cms_teach`): a layer's writes no longer wait for the layers above it.
    config("hope_layer_teach", "model.cms_teach=layer", *_lr("hope"), model="hope"),
    config("titans_linear", "model.memory=linear", *_lr("titans"), model="titans"),
    # The MLP memory at the default retention (mem_alpha0 0.982 per token) decays to its zero state
    # within a window (results/06_hope_titans/NOTE.md): retain it longer.
    config("titans_alpha0.999", "model.mem_alpha0=0.999", *_lr("titans"), model="titans"),
    config("titans_norm", *TITANS_NORM, *_lr("titans"), model="titans"),
    config("titans_cap", *TITANS_CAP, *_lr("titans"), model="titans"),
    # HOPE without the in-forward writes and without CMS: the chain MLPs are ordinary parameters.
    config("hope_static", "model.cms_mode=outer", *_chunks(1, 1), *_FFN_ADAMW_2E3, *_lr("hope"), model="hope"),
    # The outer CMS reading with hope_static's optimizer (AdamW 2e-3) instead of the seed preset's
    # SGD (lr 2, momentum 0.9, tuned for the nested LSTM), under which hope_outer is unstable
    # (results/06_hope_titans/NOTE.md).
    config("hope_outer_adamw", *_OUTER, *_FFN_ADAMW_2E3, *_lr("hope"), model="hope"),
    # The outer reading without momentum in the memories: the hypothesis is that momentum makes a
    # write only marginally stable (results/06_hope_titans/NOTE.md).
    config("hope_outer_no_momentum", *_OUTER, "model.momentum=false", *_lr("hope"), model="hope"),
), full=Mode("seed", seeds=(0, 1, 2), steps=1000, warmup=100, seq_len=512, batch_size=16, mem_chunk=64,
             sizes=SIZES_06["full"]),
    smoke=Mode("smoke", seeds=(0,), labels=tuple(MODELS_06), steps=20, synth_chars=20_000, mem_chunk=8,
               sizes=SIZES_06["smoke"]),
    common=("eval_every=0",), models=MODELS_06)

# 08: the continual-learning probe. Phase A is 06's full run (the same models, sizes, learning rates,
# 1000 steps of 16 x 512 characters of WikiText-2); phase B continues on Tiny Shakespeare for 500
# steps (4.1 M characters, about four passes over its train split), evaluated every 50 steps. In
# smoke both corpora are synthetic: corpus B is another transition matrix (synth_seed 1).
_CMS_OFF = (*_ADAMW_FFN, *_chunks(1, 1))
EXPERIMENTS["08_continual"] = Experiment("08_continual", (
    config("nested_lstm", *_chunks(16, 256), *_lr("nested_lstm"), model="nested_lstm"),
    config("nested_lstm_cms_off", *_CMS_OFF, *_lr("nested_lstm"), model="nested_lstm"),
    config("hope", *_lr("hope"), model="hope"),
    config("hope_outer", *_OUTER, *_lr("hope"), model="hope"),
    config("hope_static", "model.cms_mode=outer", *_chunks(1, 1), *_FFN_ADAMW_2E3, *_lr("hope"), model="hope"),
    config("transformer", *_lr("transformer"), model="transformer"),
    config("titans_linear", "model.memory=linear", *_lr("titans"), model="titans"),
), full=replace(EXPERIMENTS["06_hope_titans"].full, labels=None,
                phase_b=PhaseB("tinyshakespeare", steps=500, eval_points=10)),
    smoke=replace(EXPERIMENTS["06_hope_titans"].smoke, labels=None,
                  phase_b=PhaseB("synthetic", steps=10, eval_points=2, overrides=("data.synth_seed=1",))),
    common=("eval_every=0",), models=MODELS_06)

# 07: does HOPE's lead over the 06 models hold with more characters, more width and another corpus?
# The six models below at 06's shape (windows of 16 x 512 characters, warm-up 100 steps); every
# configuration of a model is 06's configuration of the same label (identity, size, levers).
# Titans' MLP memory is 06's `titans_norm` (why not `titans`: results/06_hope_titans/NOTE.md).
MODELS_07 = ("nested_lstm", "transformer", "titans_norm", "titans_linear", "hope", "hope_outer")
_LEVERS_07 = {"nested_lstm": ("nested_lstm", ()), "transformer": ("transformer", ()),
              "titans_norm": ("titans", TITANS_NORM),
              "titans_linear": ("titans", ("model.memory=linear",)), "hope": ("hope", ()),
              "hope_outer": ("hope", _OUTER)}
# Training budgets in steps of 16 x 512 characters: 8.2 M, 33 M and 131 M characters (1, 4 and 16
# times 06's). Each budget is its own run whose cosine schedule ends at its last step.
BUDGETS_07 = {"8.2M": 1000, "33M": 4000, "131M": 16000}
_SMOKE_BUDGETS_07 = {"8.2M": 20, "33M": 40, "131M": 80}
# The fast level's AdamW learning rates of the sweep: 06's rate times 1/4 .. 4 (the nested LSTM's
# CMS levels and hope_outer's chain levels keep the seed preset's optimizers, as in 06).
LR_MULTIPLIERS_07 = (0.25, 0.5, 1.0, 2.0, 4.0)
# The learning rate 07_scaling, 07_width and 07_shakespeare train each model with: the lowest
# valid bpc of 07_lr_sweep (`nlcore.experiments.scaling.best_lrs` over results/07_lr_sweep, one
# seed; tests/experiments/test_scaling.py holds the two equal).
LR_07 = {"nested_lstm": 0.005, "transformer": 0.002, "titans_norm": 0.001, "titans_linear": 0.004,
         "hope": 0.002, "hope_outer": 0.002}
# About four times 06's parameters: d_model doubled, head dimension 64 kept, d_ff chosen so each
# model's count matches the transformer's (the ratio is a test in tests/experiments/test_scaling.py).
SIZES_07_WIDE = {
    "full": {"nested_lstm": ModelSize(d_model=832, d_ff=2048),
             "transformer": ModelSize(d_model=512, d_ff=2048, n_layers=4, n_heads=8),
             "titans": ModelSize(d_model=512, d_ff=1664, n_layers=4, n_heads=8),
             "hope": ModelSize(d_model=512, d_ff=960, n_layers=4, n_heads=8, cms_chunks=(64, 256))},
    "smoke": {"nested_lstm": ModelSize(d_model=64, d_ff=128),
              "transformer": ModelSize(d_model=64, d_ff=128, n_layers=1, n_heads=4),
              "titans": ModelSize(d_model=64, d_ff=128, n_layers=1, n_heads=4),
              "hope": ModelSize(d_model=64, d_ff=128, n_layers=1, n_heads=4, cms_chunks=(16, 32))},
}


def _config_07(m: str, lr: float, budget: str | None = None, label: str | None = None) -> tuple[str, Levers]:
    """Model `m` of MODELS_07 with fast-level learning rate `lr` (and a budget of BUDGETS_07), named
    `label` (default: the model, then the budget)."""
    model, levers = _LEVERS_07[m]
    label = label or (m if budget is None else f"{m}_{budget}")
    return config(label, *levers, f"cms.levels.fast.lr={lr:g}", model=model, budget=budget)


def _sweep_lrs(m: str) -> tuple[float, ...]:
    """The rates 07_lr_sweep tries for model `m`: its 06 rate times LR_MULTIPLIERS_07."""
    return tuple(LR_06[_LEVERS_07[m][0]] * k for k in LR_MULTIPLIERS_07)


_FULL_07 = replace(EXPERIMENTS["06_hope_titans"].full, labels=None)
_SMOKE_07 = replace(EXPERIMENTS["06_hope_titans"].smoke, labels=None)

# The sweep: every model at every multiple of its 06 rate, 8.2 M characters, one seed.
EXPERIMENTS["07_lr_sweep"] = Experiment("07_lr_sweep", tuple(
    _config_07(m, lr, label=f"{m}_lr{lr:g}") for m in MODELS_07 for lr in _sweep_lrs(m)),
    full=replace(_FULL_07, seeds=(0,)), smoke=replace(_SMOKE_07, labels=("nested_lstm_lr0.005", "hope_lr0.002")),
    common=("eval_every=0",), models=MODELS_06)
# The budgets: every model at every budget with its chosen rate, three seeds.
EXPERIMENTS["07_scaling"] = Experiment("07_scaling", tuple(
    _config_07(m, LR_07[m], budget) for budget in BUDGETS_07 for m in MODELS_07),
    full=replace(_FULL_07, steps=None, budgets=BUDGETS_07),
    smoke=replace(_SMOKE_07, steps=None, budgets=_SMOKE_BUDGETS_07,
                  labels=("transformer_8.2M", "transformer_33M", "hope_8.2M", "hope_33M")),
    common=("eval_every=0",), models=MODELS_06)
# Four times the parameters at 33 M characters, three seeds, the rates chosen at 06's width.
EXPERIMENTS["07_width"] = Experiment("07_width", tuple(_config_07(m, LR_07[m]) for m in MODELS_07),
    full=replace(_FULL_07, steps=BUDGETS_07["33M"], sizes=SIZES_07_WIDE["full"]),
    smoke=replace(_SMOKE_07, steps=_SMOKE_BUDGETS_07["33M"], sizes=SIZES_07_WIDE["smoke"],
                  labels=("nested_lstm", "hope")),
    common=("eval_every=0",), models=MODELS_06)
# Tiny Shakespeare at 8.2 M characters (about eight passes over its train split), three seeds, the
# rates chosen on WikiText-2; smoke reads the synthetic corpus in its place.
EXPERIMENTS["07_shakespeare"] = Experiment("07_shakespeare", tuple(_config_07(m, LR_07[m]) for m in MODELS_07),
    full=replace(_FULL_07, corpus="tinyshakespeare"),
    smoke=replace(_SMOKE_07, corpus="synthetic", labels=("nested_lstm", "hope")),
    common=("eval_every=0",), models=MODELS_06)

for _exp in EXPERIMENTS.values():
    _exp.validate()


def run_experiment(stem: str, mode: str = "smoke", *, out: Path | None = None, jobs: int = 0,
                   echo: bool = True, only: list[str] | None = None, only_seeds: list[int] | None = None,
                   aggregate_only: bool = False) -> pd.DataFrame:
    """Run (or finish) a registered experiment and aggregate it into results/<stem>/.

    `only`: run just these configuration labels now (the others are aggregated if present).
    `only_seeds`: run and aggregate just these of the mode's seeds (a partial study, say so).
    `aggregate_only`: train nothing; aggregate the finished runs in `out` (their configurations and
    seeds are the ones meta.json names)."""
    from nlcore.paths import results_root

    if stem not in EXPERIMENTS:
        raise KeyError(f"unknown experiment {stem!r}; experiments are {sorted(EXPERIMENTS)}")
    gcs, seeds, common = EXPERIMENTS[stem].grid(mode)
    unknown = sorted(set(only or ()) - {g.label for g in gcs})
    if unknown:
        raise KeyError(f"experiment {stem}: unknown configurations {unknown}")
    unknown = sorted(set(only_seeds or ()) - set(seeds))
    if unknown:
        raise KeyError(f"experiment {stem}: seeds {unknown} are not among its {mode} seeds {list(seeds)}")
    phase_b = EXPERIMENTS[stem].mode(mode).phase_b
    out = out or results_root(mode) / stem
    if not only and not only_seeds and not aggregate_only:
        return run_grid(stem, gcs, seeds, out, jobs=jobs, common=common, echo=echo, phase_b=phase_b)
    if not aggregate_only:
        run_grid(stem, [g for g in gcs if not only or g.label in only],
                 [s for s in seeds if not only_seeds or s in only_seeds],
                 out, jobs=jobs, common=common, echo=echo, phase_b=phase_b)
    # the aggregate holds every finished run in `out` (earlier calls' too), and says which they are
    done = [p.parent for p in (out / "runs").glob("*/seed*/summary.json")]
    if not done:
        raise RunDirError(f"experiment {stem}: no finished runs under {out / 'runs'} to aggregate")
    labels, found = {d.parent.name for d in done}, {int(d.name[4:]) for d in done}
    return aggregate(stem, [g for g in gcs if g.label in labels], [s for s in seeds if s in found], out)
