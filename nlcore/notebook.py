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
    import torch

    from nlcore.config import from_dict
    from nlcore.results import read_json
    from nlcore.train import load_data

    run_dir = Path(run_dir)
    summary = read_json(run_dir / "summary.json")
    if summary.get("unigram_bpc") is not None and split == "valid":
        return float(summary["unigram_bpc"])
    cfg = from_dict(read_json(run_dir / "meta.json")["config"])
    corpus = load_data(cfg)
    vocab = corpus.tokenizer.vocab_size
    counts = torch.bincount(corpus.ids["train"], minlength=vocab).double() + 1.0  # (V,) add-one
    log_p = (counts / counts.sum()).log2()  # (V,)
    return float(-log_p[corpus.ids[split]].mean())  # mean -log2 p(c) over the split


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
