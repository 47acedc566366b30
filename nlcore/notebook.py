"""What a notebook calls first: `ctx = nl.notebook.setup("01_cms", mode=MODE, seed=SEED, ...)`.

`setup()` maps the papermill parameters (primitives only) to a `Context`: it seeds every RNG,
sets the determinism flags (strict in smoke, warn-only in full), applies the plot style, shows
figures inline when it runs inside a kernel, and prints a header (mode, device, torch, git).
The context knows where the notebook's outputs go (`fig_dir`, `results_dir`, from `nlcore.paths`)
and saves figures by slug only (`ctx.save(fig, "ci_valid_bpc")`).

`experiment(ctx)` is the notebook's experiment: the registered grid of `nlcore.experiments`
run configuration by configuration (smoke: in-process on the smoke preset; full: whatever is not
yet in `results/`), or, with `reuse_results`, the committed results read back without training.
A configuration that fails is reported and recorded (`meta.json["failed"]`), never dropped
silently; the others are still aggregated.
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from nlcore import figures as _figures  # noqa: F401  (makes `nl.figures` reachable from notebooks)
from nlcore import paths


@dataclass(frozen=True)
class Context:
    """Where one notebook's outputs go, and the parameters it ran with."""

    stem: str
    mode: str
    seed: int
    device: str
    fig_dir: Path
    results_dir: Path
    reuse_results: bool = False
    config: object = None  # the TrainConfig preset this mode's experiment starts from

    def save(self, fig, slug: str):
        """Write `fig` as `<fig_dir>/<slug>.png` and `.pdf`; return `fig` (so a cell shows it)."""
        from nlcore.plotting import save_figure

        save_figure(fig, slug, self.fig_dir)
        return fig


def _notebook_stems() -> list[str]:
    return sorted({p.stem for p in paths.NOTEBOOKS.glob("[0-9][0-9]_*.py")}
                  | {p.stem for p in paths.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")})


def _inline_figures() -> None:
    """Inside a Jupyter kernel, render figures inline (the runner's MPLBACKEND=Agg would
    otherwise leave the executed notebook without images)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None and getattr(shell, "kernel", None) is not None:
        shell.run_line_magic("matplotlib", "inline")


def setup(stem: str, mode: str = "smoke", seed: int = 0, device: str = "auto",
          reuse_results: bool = False) -> Context:
    """Seed, set determinism and plot style, print a header; return the notebook's Context."""
    import torch

    from nlcore import plotting, repro

    paths.check_mode(mode)
    stems = _notebook_stems()
    if stem not in stems:
        raise ValueError(f"setup({stem!r}): no notebook notebooks/{stem}.py; notebooks are {stems}")
    if not isinstance(reuse_results, bool):
        raise TypeError(f"reuse_results must be True or False, got {reuse_results!r}")
    dev = repro.pick_device(device)  # informational: each run takes its device from its config
    cfg = _preset_for(stem, mode)
    repro.set_determinism(True, warn_only=(mode == "full"))
    repro.seed_everything(seed)
    plotting.apply_style()
    _inline_figures()
    ctx = Context(stem=stem, mode=mode, seed=int(seed), device=str(dev),
                  fig_dir=paths.figures_root(mode) / stem, results_dir=paths.results_root(mode) / stem,
                  reuse_results=reuse_results, config=cfg)
    git = repro.git_info()
    sha = (git["revision"] or "unknown")[:10] + ("+dirty" if git["dirty"] else "")
    print(f"nlcore notebook {stem} | mode {mode}{' (re-plotting committed results)' if reuse_results else ''}"
          f" | device {dev} | torch {torch.__version__} | git {sha} | seed {seed}")
    print(f"  figures -> {_rel(ctx.fig_dir)}   results -> {_rel(ctx.results_dir)}")
    return ctx


def _preset_for(stem: str, mode: str):
    """The preset (with the experiment's common overrides) that `stem`'s grid uses in `mode`."""
    from nlcore.config import apply_overrides, preset
    from nlcore.experiments import EXPERIMENTS

    exp = EXPERIMENTS.get(stem)
    if exp is None:
        return preset("seed" if mode == "full" else "smoke")
    _, _, common = exp.grid(mode)
    return apply_overrides(preset(exp.full_preset if mode == "full" else exp.smoke_preset), list(common))


def _rel(p: Path) -> str:
    try:
        return str(p.relative_to(paths.REPO_ROOT))
    except ValueError:
        return str(p)


# ---------------------------------------------------------------------------- the experiment


@dataclass
class ExperimentResults:
    """One notebook's experiment as read back from its results folder."""

    exp_dir: Path
    runs: pd.DataFrame  # tidy: config, seed, metric, value
    summary: list[dict]  # per (config, metric): mean, ci_low, ci_high, n_seeds, ...
    meta: dict
    configs: list[str]  # configurations with results, in the registry's order
    failed: dict[str, str] = field(default_factory=dict)  # configuration -> error

    def run_dirs(self, config: str) -> list[Path]:
        """The per-seed run folders of `config` that finished (have a summary.json)."""
        return sorted(p.parent for p in (self.exp_dir / "runs" / config).glob("seed*/summary.json"))

    def value(self, config: str, metric: str) -> float:
        """The cross-seed mean of `metric` for `config` (NaN if absent)."""
        for r in self.summary:
            if r["config"] == config and r["metric"] == metric:
                return float("nan") if r["mean"] is None else float(r["mean"])
        return float("nan")


def _registry_order(stem: str) -> list[str]:
    from nlcore.experiments import EXPERIMENTS

    exp = EXPERIMENTS.get(stem)
    return [label for label, _ in exp.configs] if exp is not None else []


def load_experiment(ctx_or_dir, stem: str | None = None) -> ExperimentResults:
    """Read an experiment's results (no training): `runs.csv`, `summary.json`, `meta.json`."""
    from nlcore.results import read_experiment

    exp_dir = Path(ctx_or_dir.results_dir if isinstance(ctx_or_dir, Context) else ctx_or_dir)
    stem = stem or (ctx_or_dir.stem if isinstance(ctx_or_dir, Context) else exp_dir.name)
    mode = ctx_or_dir.mode if isinstance(ctx_or_dir, Context) else "full"
    if not (exp_dir / "summary.json").exists():
        raise FileNotFoundError(
            f"no results in {exp_dir}: run `python -m nlcore experiment {stem} --mode {mode}` first "
            f"(full: on a GPU), or run the notebook with REUSE_RESULTS=False")
    runs, summary, meta = read_experiment(exp_dir)
    present = set(runs["config"].astype(str))
    order = [c for c in _registry_order(stem) if c in present]
    order += sorted(present - set(order))
    return ExperimentResults(exp_dir, runs, summary, meta, order, dict(meta.get("failed") or {}))


def experiment(ctx: Context, *, jobs: int = 0) -> ExperimentResults:
    """The notebook's registered experiment (`nlcore.experiments.EXPERIMENTS[ctx.stem]`).

    `ctx.reuse_results`: read the committed results back, train nothing. Otherwise run the grid
    of `ctx.mode` one configuration at a time into `ctx.results_dir` (runs already finished are
    kept, see `experiments.run_grid`), then aggregate the configurations that succeeded.
    """
    from nlcore import experiments, results

    if ctx.reuse_results:
        res = load_experiment(ctx)
        print(f"re-read {_rel(res.exp_dir)}: {len(res.configs)} configuration(s), "
              f"seeds {res.meta.get('seeds')} (no training)")
        _report_failed(res.failed)
        return res
    exp = experiments.EXPERIMENTS[ctx.stem]
    grid, seeds, common = exp.grid(ctx.mode)
    out = ctx.results_dir
    t0 = time.perf_counter()
    ok, failed = [], {}
    for gc in grid:
        try:
            experiments.run_grid(ctx.stem, [gc], seeds, out, jobs=jobs, common=common, echo=False)
            ok.append(gc)
        except Exception as e:  # one broken configuration must not hide the others
            failed[gc.label] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            tb = traceback.format_exception_only(type(e), e)[-1].strip()
            print(f"FAILED {gc.label}: {tb[:300]}")
    if not ok:
        raise RuntimeError(f"{ctx.stem}: every configuration failed: {failed}")
    experiments.aggregate(ctx.stem, ok, seeds, out)
    meta = results.read_json(out / "meta.json")
    meta.update(command=f"notebook {ctx.stem} (MODE={ctx.mode!r})", mode=ctx.mode, failed=failed,
                wall_time_s=time.perf_counter() - t0)
    results.write_json(out / "meta.json", meta)
    res = load_experiment(ctx)
    print(f"{len(ok)} configuration(s) x {len(seeds)} seed(s) in {time.perf_counter() - t0:.1f} s "
          f"-> {_rel(out)}")
    _report_failed(failed)
    return res


def _report_failed(failed: dict[str, str]) -> None:
    if failed:
        print(f"WARNING: {len(failed)} configuration(s) failed and are missing from every figure "
              f"and table below:")
        for label, err in failed.items():
            print(f"  {label}: {err}")


# ---------------------------------------------------------------------------- reference levels


def unigram_bpc(run_dir: str | Path, split: str = "valid") -> float:
    """Bits per character of the unigram model (train-split character frequencies, add-one
    smoothed) on `split` of the corpus a run used: the level any trained model must beat.

    Reads `unigram_bpc` from the run's summary when the trainer wrote it; otherwise loads the
    corpus named in the run's `meta.json` config (needs the data for real corpora).
    """
    from nlcore.config import from_dict
    from nlcore.evaluate import unigram_bpc as _unigram
    from nlcore.results import read_json
    from nlcore.train import load_data

    run_dir = Path(run_dir)
    summary = read_json(run_dir / "summary.json")
    if summary.get("unigram_bpc") is not None and split == "valid":
        return float(summary["unigram_bpc"])
    cfg = from_dict(read_json(run_dir / "meta.json")["config"])
    return _unigram(load_data(cfg), split)


def expected_updates(steps: int, chunk: int, partial: str = "flush", optimizer: str = "sgd") -> int:
    """Updates a level with chunk C makes in `steps` steps: floor(steps / C), plus one for a
    flushed final partial chunk; 0 for a frozen level (optimizer "none")."""
    if optimizer == "none":
        return 0
    return steps // chunk + (1 if steps % chunk and partial == "flush" else 0)


def updates_check(res: ExperimentResults) -> pd.DataFrame:
    """Per run and level: chunk, steps, updates made (summary) and updates expected (Eq. 31)."""
    from nlcore.results import read_json

    rows = []
    for config in res.configs:
        for run in res.run_dirs(config):
            summary = read_json(run / "summary.json")
            cms = read_json(run / "meta.json")["config"]["cms"]
            for lv in cms["levels"]:
                made = summary.get("updates_by_level", {}).get(lv["name"])
                rows.append({"config": config, "seed": int(run.name[4:]), "level": lv["name"],
                             "chunk": lv["chunk"], "steps": summary["steps"], "updates": made,
                             "expected": expected_updates(summary["steps"], lv["chunk"], cms["partial"],
                                                          lv["optimizer"])})
    df = pd.DataFrame(rows, columns=["config", "seed", "level", "chunk", "steps", "updates", "expected"])
    df["ok"] = df["updates"] == df["expected"]
    return df


def all_finite(res: ExperimentResults) -> bool:
    """True when every value in runs.csv and every logged training loss is finite."""
    from nlcore.results import read_metrics

    if not all(math.isfinite(v) for v in res.runs["value"]):
        return False
    for config in res.configs:
        for run in res.run_dirs(config):
            if (run / "metrics.jsonl").exists():
                losses = [r.get("train_loss") for r in read_metrics(run / "metrics.jsonl")]
                if not all(v is not None and math.isfinite(v) for v in losses):
                    return False
    return True


# ---------------------------------------------------------------------------- paired comparisons


def committed_results(stem: str) -> ExperimentResults:
    """The committed FULL results of experiment `stem` (`results/<stem>/`), whatever the mode:
    what the takeaways quote."""
    return load_experiment(paths.results_root("full") / stem, stem)


def summary_field(res: ExperimentResults, config: str, key: str):
    """`key` of the first finished seed's `summary.json` of `config` (e.g. entropy_rate_bits)."""
    from nlcore.results import read_json

    dirs = res.run_dirs(config)
    if not dirs:
        raise FileNotFoundError(f"no finished run of {config!r} under {res.exp_dir / 'runs'}")
    return read_json(dirs[0] / "summary.json").get(key)


def paired_differences(runs: pd.DataFrame, baselines, metric: str = "valid_bpc") -> pd.DataFrame:
    """Per configuration, the seed-by-seed difference `metric(config) − metric(baseline)` over the
    seeds both ran: mean and 95 % bootstrap CI (`nlcore.stats.paired_diff_ci`), n, how many
    seeds came out lower, and the baseline's own (unpaired) CI half-width for scale.
    `baselines` maps configuration -> its baseline (a str applies one baseline to every
    configuration in `runs`); a configuration is not compared with itself."""
    from nlcore import stats

    m = runs[runs["metric"] == metric]
    by = {str(c): g.set_index("seed")["value"].astype(float) for c, g in m.groupby("config", sort=False)}
    if isinstance(baselines, str):
        baselines = {c: baselines for c in by}
    rows = []
    for config, base in baselines.items():
        if config == base or config not in by or base not in by:
            continue
        seeds = sorted(set(by[config].index) & set(by[base].index))
        if not seeds:
            continue
        a, b = by[config].loc[seeds].to_numpy(), by[base].loc[seeds].to_numpy()  # (n,), same seed order
        mean, lo, hi = stats.paired_diff_ci(a, b)
        _, blo, bhi = stats.bootstrap_ci(b)
        rows.append({"config": config, "baseline": base, "n": len(seeds), "mean": mean, "ci_low": lo, "ci_high": hi,
                     "seeds_lower": int((a < b).sum()), "baseline_half_width": (bhi - blo) / 2})
    cols = ["config", "baseline", "n", "mean", "ci_low", "ci_high", "seeds_lower", "baseline_half_width"]
    return pd.DataFrame(rows, columns=cols)


def corpus_panels(res: ExperimentResults, prefixes: dict[str, str]) -> list[tuple[str, str, float, str]]:
    """Panels for `nlcore.figures.ci_panels`, one per configuration-label prefix present
    (`{prefix: title}`), each with its corpus's reference level: the entropy rate (the optimum)
    where the corpus knows it (synthetic), else the unigram model."""
    panels = []
    for prefix, title in prefixes.items():
        configs = [c for c in res.configs if c.startswith(prefix)]
        if not configs:
            continue
        rate = summary_field(res, configs[0], "entropy_rate_bits")
        if rate is not None:
            panels.append((prefix, title, float(rate), "entropy rate (the optimum)"))
        else:
            panels.append((prefix, title, unigram_bpc(res.run_dirs(configs[0])[0]), "unigram model"))
    return panels


def surprise_scales(res: ExperimentResults) -> pd.DataFrame:
    """`nlcore.figures.surprise_scale` of every run of `res` that used the surprise objective,
    with config and seed columns."""
    from nlcore.figures import surprise_scale

    frames = [surprise_scale(run).assign(config=c, seed=int(run.name[4:]))
              for c in res.configs for run in res.run_dirs(c)]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# ---------------------------------------------------------------------------- several experiments

ABLATION_STEMS = ("01_cms", "02_surprise", "03_persistent_state", "04_delta_rule")
_CMS_LEVER = "CMS: chunks, lr policy, optimizer"
_LEVER_OF = {  # (experiment, configuration without corpus prefix) -> the lever it moves
    "01_cms": {"zero_init_ffn": "baseline", "default": "FFN output init", "no_norm_residual": "LayerNorm + residual"},
    "02_surprise": {"none": "baseline"},
    "03_persistent_state": {"persistent": "baseline", "persistent_surprise": "surprise objective"},
    "04_delta_rule": {"sgd_default": "baseline", "adamw": _CMS_LEVER},
}
_LEVER_DEFAULT = {"01_cms": _CMS_LEVER, "02_surprise": "surprise objective", "03_persistent_state": "state policy",
                  "04_delta_rule": "delta rule"}


def ablation_lever(stem: str, config: str, prototype: bool = False) -> str:
    """The lever a configuration of experiment `stem` moves (the baseline: none)."""
    if prototype:
        return "the prototype's settings"
    name = config.split("_", 1)[1] if stem == "02_surprise" and "_" in config else config
    return _LEVER_OF.get(stem, {}).get(name, _LEVER_DEFAULT.get(stem, stem))


def collect_experiments(ctx: Context, stems=ABLATION_STEMS, metrics=("valid_bpc", "test_bpc"),
                        mode: str | None = None) -> pd.DataFrame:
    """The per-seed results of several registered experiments as one tidy frame, read from the
    results root of `mode` (default `ctx.mode`; full: the committed `results/`, smoke:
    `build/smoke/results/`).

    In smoke mode (without `reuse_results`) an experiment with no results yet is run first
    through the registry (`experiments.run_experiment(stem, "smoke")`, in-process: seconds); in
    full mode a missing experiment is an error (run `python -m nlcore experiment <stem> --mode full`).
    Columns: experiment, config, seed, metric, value, and per configuration (from its first
    run's meta.json) corpus, prototype (compat=prototype), steps, batch_size, seq_len, chars
    (characters read in training = steps·B·T).
    """
    from nlcore.experiments import run_experiment
    from nlcore.results import read_json

    mode = paths.check_mode(mode or ctx.mode)
    root = paths.results_root(mode)
    missing = [s for s in stems if not (root / s / "summary.json").exists()]
    if missing and (mode != "smoke" or ctx.reuse_results):
        raise FileNotFoundError(f"no results for {missing} under {_rel(root)}: run `python -m nlcore experiment "
                                f"<stem> --mode {mode}` first")
    for stem in missing:
        t0 = time.perf_counter()
        run_experiment(stem, "smoke", out=root / stem, echo=False)
        print(f"  no smoke results for {stem}: ran its registry grid in {time.perf_counter() - t0:.1f} s")
    frames = []
    for stem in stems:
        res = load_experiment(root / stem, stem)
        for config in res.configs:
            dirs = res.run_dirs(config)
            if not dirs:
                continue
            cfg = read_json(dirs[0] / "meta.json")["config"]
            d = res.runs[(res.runs["config"] == config) & res.runs["metric"].isin(metrics)]
            frames.append(d[["config", "seed", "metric", "value"]].assign(
                experiment=stem, corpus=cfg["data"]["corpus"], prototype=cfg.get("compat") == "prototype",
                steps=cfg["steps"], batch_size=cfg["data"]["batch_size"], seq_len=cfg["data"]["seq_len"]))
        print(f"  {stem}: {len(res.configs)} configuration(s), seeds {res.meta.get('seeds')} <- {_rel(res.exp_dir)}")
    df = pd.concat(frames, ignore_index=True)
    df["seed"] = df["seed"].astype(int)
    df["chars"] = df["steps"] * df["batch_size"] * df["seq_len"]
    cols = ["experiment", "config", "seed", "metric", "value", "corpus", "prototype", "steps", "batch_size",
            "seq_len", "chars"]
    return df[cols]


def ablation_table(frame: pd.DataFrame, corpus: str, metric: str = "valid_bpc") -> pd.DataFrame:
    """One row per DISTINCT configuration of `frame` (as `collect_experiments` returns it) on
    `corpus`: configurations whose per-seed `metric` values are identical to the last digit are
    the same runs (e.g. 01 zero_init_ffn, 02 <corpus>_none, 03 persistent, 04 sgd_default) and
    appear once, under the first experiment's name, with the others in `same_as`.

    Columns: experiment, config, label (`NN_config`), lever, same_as, prototype, n, mean,
    ci_low, ci_high (95 % bootstrap over seeds, as in each summary.json), chars_ratio
    (characters read in training / the baseline's), steps, batch_size, seq_len.
    """
    from nlcore import stats

    d = frame[(frame["corpus"] == corpus) & (frame["metric"] == metric)]
    keys: dict[tuple, list[tuple[str, str]]] = {}
    for (stem, config), g in d.groupby(["experiment", "config"], sort=False):
        key = tuple(sorted(zip(g["seed"].astype(int), g["value"].astype(float))))
        keys.setdefault(key, []).append((stem, config))
    rows = []
    for key, members in keys.items():
        stem, config = members[0]
        g = d[(d["experiment"] == stem) & (d["config"] == config)].iloc[0]
        mean, lo, hi = stats.bootstrap_ci([v for _, v in key])
        rows.append({"experiment": stem, "config": config, "label": f"{stem[:2]}_{config}",
                     "lever": ablation_lever(stem, config, bool(g["prototype"])),
                     "same_as": ", ".join(f"{s[:2]} {c}" for s, c in members[1:]), "prototype": bool(g["prototype"]),
                     "n": len(key), "mean": mean, "ci_low": lo, "ci_high": hi, "chars": int(g["chars"]),
                     "steps": int(g["steps"]), "batch_size": int(g["batch_size"]), "seq_len": int(g["seq_len"])})
    t = pd.DataFrame(rows)
    base = t[t["lever"] == "baseline"]
    ref = base["chars"].iloc[0] if len(base) else t["chars"].median()
    t["chars_ratio"] = t["chars"] / ref
    return t.drop(columns="chars")


def ablation_runs(frame: pd.DataFrame, table: pd.DataFrame, metrics=("valid_bpc", "test_bpc")) -> pd.DataFrame:
    """The tidy runs (config = the table's label, lever, seed, metric, value) of the distinct
    configurations in `table`, for `nlcore.results.write_experiment`."""
    keep = table.set_index(["experiment", "config"])
    d = frame[frame["metric"].isin(metrics)].merge(keep[["label", "lever"]].reset_index(), on=["experiment", "config"])
    return d.assign(config=d["label"])[["config", "lever", "seed", "metric", "value"]]
