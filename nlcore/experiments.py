"""Multi-seed experiments: a grid of named configurations x seeds, run and aggregated.

Each (configuration, seed) is one `python -m nlcore train` run in its own directory
``<out>/runs/<config>/seed<k>/`` (its own meta.json, metrics.jsonl, summary.json), started as a
subprocess so several small runs can share one GPU. A run whose summary.json exists is not
run again, and an interrupted one resumes from its checkpoint, so nothing is lost on a crash.
The experiment is then aggregated into ``<out>/runs.csv`` (tidy), ``<out>/summary.json``
(mean and bootstrap 95 % CI across seeds per configuration and metric) and ``<out>/meta.json``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from nlcore.config import apply_overrides, preset

METRICS = ("valid_bpc", "test_bpc", "train_loss_last100", "train_ppl_last100", "chars_per_s",
           "valid_bpc_dynamic", "test_bpc_dynamic")  # the last two only where dynamic_eval_lr > 0


@dataclass(frozen=True)
class GridConfig:
    label: str
    preset: str
    overrides: tuple[str, ...] = ()


def parse_config_arg(arg: str, default_preset: str) -> GridConfig:
    """'label: key=v key=v' or 'label@preset: key=v ...' -> GridConfig (validated now)."""
    head, _, rest = arg.partition(":")
    label, _, pre = head.strip().partition("@")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", label or ""):
        raise ValueError(f"--config: bad label {label!r} (letters, digits, '.', '-' and '_')")
    gc = GridConfig(label, pre or default_preset, tuple(shlex.split(rest)))
    apply_overrides(preset(gc.preset), list(gc.overrides))  # fail early on bad keys
    return gc


def run_grid(name: str, configs: list[GridConfig], seeds: list[int], out: Path, *, jobs: int = 1,
             common: tuple[str, ...] = (), python: str = sys.executable, echo: bool = True) -> pd.DataFrame:
    out.mkdir(parents=True, exist_ok=True)
    todo = []
    for gc in configs:
        for seed in seeds:
            run_dir = out / "runs" / gc.label / f"seed{seed}"
            if (run_dir / "summary.json").exists():
                continue
            sets = [*common, *gc.overrides, f"seed={seed}"]
            cmd = [python, "-m", "nlcore", "train", "--preset", gc.preset, "--out", str(run_dir),
                   "--resume", "--no-progress", *[a for s in sets for a in ("--set", s)]]
            todo.append((gc.label, seed, run_dir, cmd))
    t0 = time.time()
    if jobs == 0:  # in-process, sequential (smoke mode: no interpreter start-up per run)
        from nlcore.config import apply_overrides as _apply
        from nlcore.train import Trainer

        for label, seed, run_dir, cmd in todo:
            gc = next(g for g in configs if g.label == label)
            cfg = _apply(preset(gc.preset), [*common, *gc.overrides, f"seed={seed}"])
            s = Trainer(cfg, run_dir, command=" ".join(shlex.quote(a) for a in cmd[1:]), progress=False).run(resume=True)
            if echo:
                print(f"[{name}] done {label} seed {seed}: valid {s['valid_bpc']:.4f} bpc ({time.time() - t0:.0f} s)",
                      flush=True)
        todo = []
    running: list[tuple[str, int, Path, subprocess.Popen]] = []
    failures = []
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    while todo or running:
        while todo and len(running) < jobs:
            label, seed, run_dir, cmd = todo.pop(0)
            run_dir.mkdir(parents=True, exist_ok=True)
            log = open(run_dir / "train.log", "w")
            running.append((label, seed, run_dir, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)))
            if echo:
                print(f"[{name}] start {label} seed {seed}", flush=True)
        time.sleep(0.5)
        for item in list(running):
            label, seed, run_dir, proc = item
            if proc.poll() is None:
                continue
            running.remove(item)
            if proc.returncode != 0:
                failures.append((label, seed, run_dir))
                tail = (run_dir / "train.log").read_text()[-2000:]
                print(f"[{name}] FAILED {label} seed {seed} (exit {proc.returncode})\n{tail}", flush=True)
            elif echo:
                s = json.loads((run_dir / "summary.json").read_text())
                print(f"[{name}] done {label} seed {seed}: valid {s['valid_bpc']:.4f} test {s['test_bpc']:.4f} "
                      f"bpc, {s['chars_per_s'] / 1e6:.2f} M chars/s ({time.time() - t0:.0f} s)", flush=True)
    if failures:
        raise RuntimeError(f"{len(failures)} run(s) failed: {[(a, b) for a, b, _ in failures]}")
    return aggregate(name, configs, seeds, out)


def collect(out: Path, labels: list[str] | None = None) -> pd.DataFrame:
    """Tidy rows (config, seed, metric, value) from every run summary under out/runs."""
    rows = []
    for summ in sorted((out / "runs").glob("*/seed*/summary.json")):
        label, seed = summ.parent.parent.name, int(summ.parent.name[4:])
        if labels is not None and label not in labels:
            continue
        s = json.loads(summ.read_text())
        for m in METRICS:
            if s.get(m) is not None:
                rows.append({"config": label, "seed": seed, "metric": m, "value": float(s[m])})
    return pd.DataFrame(rows, columns=["config", "seed", "metric", "value"])


def aggregate(name: str, configs: list[GridConfig], seeds: list[int], out: Path) -> pd.DataFrame:
    from nlcore import repro
    from nlcore.results import write_experiment

    df = collect(out, [gc.label for gc in configs])
    run_metas = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/seed*/meta.json"))
                 if p.parent.parent.name in {gc.label for gc in configs}]
    revisions = sorted({json.dumps(m.get("git"), sort_keys=True) for m in run_metas})
    meta = {
        "experiment": name, "command": " ".join(shlex.quote(a) for a in sys.argv), "seeds": list(seeds),
        "configs": {gc.label: {"preset": gc.preset, "overrides": list(gc.overrides)} for gc in configs},
        "git": repro.git_info(),  # where the aggregation ran; the runs' own revisions below
        "run_revisions": [json.loads(r) for r in revisions],
        "run_environment": run_metas[0].get("environment") if run_metas else None,
        "environment": repro.capture_environment(),
    }
    write_experiment(out, df, meta=meta)
    return df


# ----------------------------------------------------------------------------- the registry
# Each notebook's experiment as data: named configurations (preset + overrides) and seeds per
# mode. FULL runs on a GPU through `python -m nlcore experiment NN --mode full`, writing the
# committed results/<stem>/; SMOKE runs the same configurations on the smoke preset in-process.

@dataclass(frozen=True)
class Experiment:
    stem: str
    configs: tuple[tuple[str, tuple[str, ...]], ...]  # (label, overrides applied on the mode's preset)
    full_preset: str = "seed"
    smoke_preset: str = "smoke"
    full_seeds: tuple[int, ...] = (0, 1, 2)
    smoke_seeds: tuple[int, ...] = (0,)
    full_common: tuple[str, ...] = ()
    smoke_common: tuple[str, ...] = ()
    smoke_labels: tuple[str, ...] | None = None  # None: every configuration also runs in smoke
    smoke_replace: tuple[tuple[str, str], ...] = (("data.seq_len=512", "data.seq_len=64"),)

    def grid(self, mode: str) -> tuple[list[GridConfig], list[int], tuple[str, ...]]:
        """(configurations, seeds, common overrides) for `mode`; smoke swaps a few numbers."""
        if mode == "full":
            gcs = [GridConfig(label, self.full_preset, tuple(ov)) for label, ov in self.configs]
            return gcs, list(self.full_seeds), self.full_common
        swap = dict(self.smoke_replace)
        gcs = [GridConfig(label, self.smoke_preset, tuple(swap.get(o, o) for o in ov))
               for label, ov in self.configs if self.smoke_labels is None or label in self.smoke_labels]
        return gcs, list(self.smoke_seeds), self.smoke_common


_ADAMW_FFN = ("cms.levels.medium.optimizer=adamw", "cms.levels.slow.optimizer=adamw",
              "cms.levels.medium.lr=5e-3", "cms.levels.slow.lr=5e-3")
_PROTO_SCHEDULE = ("cms.levels.fast.optimizer=adam", "cms.levels.medium.optimizer=adam",
                   "cms.levels.slow.optimizer=adam", "cms.levels.fast.lr=3e-4", "cms.levels.medium.lr=3e-4",
                   "cms.levels.slow.lr=3e-4", "cms.lr_policy=divide_by_chunk", "cms.aggregation=sum",
                   "cms.grad_clip=0", "schedule=constant", "warmup=0")
_PROTOTYPE = ("compat=prototype", "model.norm_residual=false", "model.zero_init_ffn_out=false",
              "model.activation=relu", *_PROTO_SCHEDULE)
_SURPRISE = ("surprise.weights.fast=0.05", "surprise.weights.medium=0.01")
_ZERO = ("model.zero_init_ffn_out=true",)  # the default before results/01_cms chose random init


def _chunks(m: int, s: int) -> tuple[str, ...]:
    return (f"cms.levels.medium.chunk={m}", f"cms.levels.slow.chunk={s}")


def _rows(prefix: str, base: tuple[str, ...]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The prototype's headline-table rows (plus document resets and hierarchical state)."""
    return (
        (f"{prefix}reset_every_batch", (*base, "state.reset=every_batch")),
        (f"{prefix}persistent", (*base, "state.reset=never")),
        (f"{prefix}persistent_surprise", (*base, "state.reset=never", *_SURPRISE)),
        (f"{prefix}persistent_512", (*base, "state.reset=never", "data.seq_len=512")),
        (f"{prefix}persistent_doc_resets", (*base, "state.reset=doc")),
        (f"{prefix}persistent_hierarchical", (*base, "state.reset=never", "model.hierarchical_state=true")),
    )


EXPERIMENTS: dict[str, Experiment] = {
    # Every configuration but "default" ran when zero-initialised FFN outputs were the default;
    # they pin it, so re-running reproduces the committed results (results/01_cms/NOTE.md).
    "01_cms": Experiment("01_cms", (
        ("default", ()),
        ("zero_init_ffn", _ZERO),
        ("all_adamw", (*_ZERO, *_ADAMW_FFN)),
        ("adam_lr_div_chunk", (*_ZERO, *_ADAMW_FFN, "cms.lr_policy=divide_by_chunk")),
        ("chunks_1_4_16", (*_ZERO, *_chunks(4, 16))),
        ("chunks_1_2_4", (*_ZERO, *_chunks(2, 4))),
        ("cms_off", (*_ZERO, *_ADAMW_FFN, *_chunks(1, 1))),
        ("no_norm_residual", ("model.norm_residual=false",)),
    )),
    # Which activation the prototype used is unknown: GELU beside the ReLU of the 03 rows.
    "prototype_match": Experiment("prototype_match", (
        ("prototype_relu_persistent", (*_PROTOTYPE, "state.reset=never")),
        ("prototype_gelu_persistent", (*_PROTOTYPE, "state.reset=never", "model.activation=gelu")),
    )),
    "02_surprise": Experiment("02_surprise", tuple(
        (f"{corpus}_{label}", (f"data.corpus={corpus}", *ov))
        for corpus in ("wikitext2", "synthetic")
        for label, ov in (
            ("none", ()),
            ("w0.05_0.01", ("surprise.weights.fast=0.05", "surprise.weights.medium=0.01")),
            ("w0.1_0.05", ("surprise.weights.fast=0.1", "surprise.weights.medium=0.05")),
            ("w0.3_0.1", ("surprise.weights.fast=0.3", "surprise.weights.medium=0.1")),
            ("fast_only_0.3", ("surprise.weights.fast=0.3",)),
            ("cheap_0.05_every4", ("surprise.weights.fast=0.05", "surprise.every=4")),
        )), full_common=("data.synth_chars=2000000", *_ZERO), smoke_common=_ZERO,
        smoke_labels=tuple(f"synthetic_{x}" for x in ("none", "w0.05_0.01", "fast_only_0.3"))),
    "03_persistent_state": Experiment("03_persistent_state", _rows("", ()) + _rows("prototype_", _PROTOTYPE),
                                      full_common=_ZERO, smoke_common=_ZERO),
    "04_delta_rule": Experiment("04_delta_rule", (
        ("sgd_default", ()),
        ("adamw", _ADAMW_FFN),
        ("delta", ("cms.levels.medium.optimizer=delta", "cms.levels.slow.optimizer=delta",
                   "cms.levels.medium.lr=0.5", "cms.levels.slow.lr=0.5")),
        ("delta_lr0.1", ("cms.levels.medium.optimizer=delta", "cms.levels.slow.optimizer=delta",
                         "cms.levels.medium.lr=0.1", "cms.levels.slow.lr=0.1")),
        ("delta_batch_mean", ("cms.levels.medium.optimizer=delta_batch_mean", "cms.levels.slow.optimizer=delta_batch_mean",
                              "cms.levels.medium.lr=0.5", "cms.levels.slow.lr=0.5")),
    ), full_common=_ZERO, smoke_common=_ZERO),
}


# 06: four models at matched parameters (about 3.3 M) and matched characters (1000 steps of
# 16 x 512 = 8.2 M characters, 0.76 of an epoch), every parameter of the three new models in the fast level (AdamW, `lr`). The nested
# LSTM keeps its tuned CMS policy, so its AdamW lr applies to the fast level only.
_MODELS_06 = {
    "nested_lstm": ("model.d_model=416", "model.d_ff=1024"),
    "transformer": ("model.kind=transformer", "model.d_model=256", "model.n_layers=4", "model.n_heads=4",
                    "model.d_ff=1024"),
    "titans": ("model.kind=titans", "model.memory=mlp", "model.d_model=256", "model.n_layers=4",
               "model.n_heads=4", "model.d_ff=768"),
    "hope": ("model.kind=hope", "model.d_model=256", "model.n_layers=4", "model.n_heads=4", "model.d_ff=448",
             "model.cms_mode=in_forward", "model.cms_chunks=64,256"),
}
_SIZE_06 = ("data.seq_len=512", "data.batch_size=16")
_SMOKE_06 = (("model.d_model=416", "model.d_model=32"), ("model.d_model=256", "model.d_model=32"),
             ("model.n_layers=4", "model.n_layers=1"), ("model.n_heads=4", "model.n_heads=2"),
             ("model.d_ff=1024", "model.d_ff=64"), ("model.d_ff=768", "model.d_ff=64"),
             ("model.d_ff=448", "model.d_ff=64"), ("model.cms_chunks=64,256", "model.cms_chunks=16,32"),
             ("data.seq_len=512", "data.seq_len=32"), ("data.batch_size=16", "data.batch_size=8"))
_SMOKE_COMMON_06 = ("model.mem_chunk=8", "steps=20", "eval_every=0", "data.synth_chars=20000")
# Not tuned per model: the nested LSTM keeps its tuned default; the others take 2e-3 (a short
# uncommitted probe, scripts/gpu/diag_06.sh, is all the tuning there was).
LR_06 = {"nested_lstm": 5e-3, "transformer": 2e-3, "titans": 2e-3, "hope": 2e-3}


def _lr(lr: float) -> tuple[str, ...]:
    return (f"cms.levels.fast.lr={lr:g}",)


EXPERIMENTS["06_hope_titans"] = Experiment("06_hope_titans", (
    *((m, (*ov, *_lr(LR_06[m]))) for m, ov in _MODELS_06.items()),
    ("hope_outer", (*_MODELS_06["hope"], "model.cms_mode=outer", *_lr(LR_06["hope"]),
                    "cms.levels.medium.chunk=16", "cms.levels.slow.chunk=256")),
    ("hope_no_momentum", (*_MODELS_06["hope"], "model.momentum=false", *_lr(LR_06["hope"]))),
    ("titans_linear", (*_MODELS_06["titans"], "model.memory=linear", *_lr(LR_06["titans"]))),
    # the MLP memory at the default retention decays to its zero state within a window (its carried
    # state norm stays constant over every logged step of "titans"): retain it longer
    ("titans_alpha0.999", (*_MODELS_06["titans"], "model.mem_alpha0=0.999", *_lr(LR_06["titans"]))),
    # HOPE without the in-forward writes and without CMS: the chain MLPs are ordinary parameters
    ("hope_static", (*_MODELS_06["hope"], "model.cms_mode=outer", "cms.levels.medium.chunk=1",
                     "cms.levels.slow.chunk=1", *_ADAMW_FFN[:2], "cms.levels.medium.lr=2e-3",
                     "cms.levels.slow.lr=2e-3", *_lr(LR_06["hope"]))),
    # the outer CMS reading with hope_static's optimizer (AdamW 2e-3) instead of the seed preset's SGD
    # (lr 2, momentum 0.9, tuned for the nested LSTM), under which hope_outer diverged on a seed
    ("hope_outer_adamw", (*_MODELS_06["hope"], "model.cms_mode=outer", "cms.levels.medium.chunk=16",
                          "cms.levels.slow.chunk=256", *_ADAMW_FFN[:2], "cms.levels.medium.lr=2e-3",
                          "cms.levels.slow.lr=2e-3", *_lr(LR_06["hope"]))),
    # the outer reading without momentum in the memories: in every failed outer run the memories' carried
    # state blew up (results/06_hope_titans/NOTE.md); the hypothesis is that momentum makes a write only
    # marginally stable
    ("hope_outer_no_momentum", (*_MODELS_06["hope"], "model.cms_mode=outer", "model.momentum=false",
                                *_lr(LR_06["hope"]), "cms.levels.medium.chunk=16", "cms.levels.slow.chunk=256")),
), full_common=(*_SIZE_06, "model.mem_chunk=64", "steps=1000", "warmup=100", "eval_every=0"),
    smoke_common=_SMOKE_COMMON_06,
    smoke_replace=_SMOKE_06, smoke_labels=("nested_lstm", "transformer", "titans", "hope"))


def run_experiment(stem: str, mode: str = "smoke", *, out: Path | None = None, jobs: int = 0,
                   echo: bool = True, only: list[str] | None = None,
                   aggregate_only: bool = False) -> pd.DataFrame:
    """Run (or finish) a registered experiment and aggregate it into results/<stem>/.

    `only`: run just these configuration labels now (the others are aggregated if present)."""
    from nlcore.paths import results_root

    if stem not in EXPERIMENTS:
        raise KeyError(f"unknown experiment {stem!r}; experiments are {sorted(EXPERIMENTS)}")
    gcs, seeds, common = EXPERIMENTS[stem].grid(mode)
    out = out or results_root(mode) / stem
    if aggregate_only:
        return aggregate(stem, gcs, seeds, out)
    if only:
        unknown = sorted(set(only) - {g.label for g in gcs})
        if unknown:
            raise KeyError(f"experiment {stem}: unknown configurations {unknown}")
        run_grid(stem, [g for g in gcs if g.label in only], seeds, out, jobs=jobs, common=common, echo=echo)
        present = {p.parent.parent.name for p in (out / "runs").glob("*/seed*/summary.json")}
        return aggregate(stem, [g for g in gcs if g.label in present], seeds, out)
    return run_grid(stem, gcs, seeds, out, jobs=jobs, common=common, echo=echo)
