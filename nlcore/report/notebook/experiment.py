"""A notebook's experiment: run its registered grid, or read its results back (`ExperimentResults`)."""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from nlcore import paths
from nlcore.report.notebook.setup import Context, relpath


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
    return exp.labels if exp is not None else []


def load_experiment(ctx_or_dir, stem: str | None = None) -> ExperimentResults:
    """Read an experiment's results (no training): `runs.csv`, `summary.json`, `meta.json`."""
    from nlcore.results import read_experiment

    exp_dir = Path(ctx_or_dir.results_dir if isinstance(ctx_or_dir, Context) else ctx_or_dir)
    stem = stem or (ctx_or_dir.stem if isinstance(ctx_or_dir, Context) else exp_dir.name)
    mode = ctx_or_dir.mode if isinstance(ctx_or_dir, Context) else "full"
    if not (exp_dir / "summary.json").exists():
        raise FileNotFoundError(
            f"no results in {exp_dir}: run `python -m nlcore experiment {stem} --mode {mode}` first "
            f"(full: on a GPU), or run the notebook with VIEW = 'smoke'")
    runs, summary, meta = read_experiment(exp_dir)
    present = set(runs["config"].astype(str))
    order = [c for c in _registry_order(stem) if c in present]
    order += sorted(present - set(order))
    return ExperimentResults(exp_dir, runs, summary, meta, order, dict(meta.get("failed") or {}))


def experiment(ctx: Context, *, jobs: int = 0) -> ExperimentResults:
    """The notebook's registered experiment (`nlcore.experiments.EXPERIMENTS[ctx.stem]`).

    The committed view reads the committed results back and trains nothing. The smoke and full
    views run the grid of their mode one configuration at a time into `ctx.results_dir` (runs
    already finished are kept, see `experiments.run_grid`), then aggregate the configurations
    that succeeded.
    """
    from nlcore import experiments, results

    if not ctx.trains:
        res = load_experiment(ctx)
        print(f"{relpath(res.exp_dir)}: {len(res.configs)} configuration(s) x seeds {res.meta.get('seeds')}")
        _report_failed(res.failed)
        return res
    exp = experiments.EXPERIMENTS[ctx.stem]
    grid, seeds, common = exp.grid(ctx.mode)
    out = ctx.results_dir
    t0 = time.perf_counter()
    ok, failed = [], {}
    for gc in grid:
        try:
            experiments.run_grid(ctx.stem, [gc], seeds, out, jobs=jobs, common=common, echo=False,
                                 phase_b=exp.mode(ctx.mode).phase_b)
            ok.append(gc)
        except Exception as e:  # one broken configuration must not hide the others
            failed[gc.label] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            tb = traceback.format_exception_only(type(e), e)[-1].strip()
            print(f"FAILED {gc.label}: {tb[:300]}")
    if not ok:
        raise RuntimeError(f"{ctx.stem}: every configuration failed: {failed}")
    experiments.aggregate(ctx.stem, ok, seeds, out)
    meta = results.read_json(out / "meta.json")
    meta.update(command=f"notebook {ctx.stem} (VIEW={ctx.view!r})", mode=ctx.mode, failed=failed,
                wall_time_s=time.perf_counter() - t0)
    results.write_json(out / "meta.json", meta)
    res = load_experiment(ctx)
    print(f"{len(ok)} configuration(s) x {len(seeds)} seed(s) in {time.perf_counter() - t0:.1f} s "
          f"-> {relpath(out)}")
    _report_failed(failed)
    return res


def _report_failed(failed: dict[str, str]) -> None:
    if failed:
        print(f"WARNING: {len(failed)} configuration(s) failed and are missing from every figure "
              f"and table below:")
        for label, err in failed.items():
            print(f"  {label}: {err}")


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
