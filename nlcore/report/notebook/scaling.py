"""Notebook 07 (scaling): its other experiments beside its own, runs priced at one GPU's step times,
the leader of each setting with paired differences to it, and the takeaways rendered from the
committed results. A budget or an experiment with no committed runs is named as such, never
skipped in silence: the lesson is published while parts of the study wait for a GPU."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pandas as pd

from nlcore import paths
from nlcore.experiments.registry import BUDGETS_07, LR_MULTIPLIERS_07, MODELS_07
from nlcore.experiments.scaling import best_lrs
from nlcore.report.figures.scaling import bench_seconds, compute_matched, context_gain, scaling_runs
from nlcore.report.notebook.ablations import separation
from nlcore.report.notebook.cite import Quote
from nlcore.report.notebook.compare import paired_differences
from nlcore.report.notebook.experiment import ExperimentResults, committed_results, experiment
from nlcore.report.notebook.setup import Context, relpath

STEMS_07 = ("07_lr_sweep", "07_scaling", "07_width", "07_shakespeare")


def study(ctx: Context, stem: str) -> ExperimentResults | None:
    """Experiment `stem` beside the notebook's own: trained in the smoke and full views, read back in
    the committed view; None (and a line saying so) in the committed view while it has no runs."""
    other = replace(ctx, stem=stem, results_dir=ctx.results_dir.parent / stem)
    if not ctx.trains and not (other.results_dir / "summary.json").is_file():
        print(f"{relpath(other.results_dir)}: no committed runs yet (docs/scaling.md has the commands; they need a GPU)")
        return None
    return experiment(other)


def priced(root: Path, runs: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """`runs` and the column of seconds that compares compute: `gpu_s`, the runs priced at the step
    times of `<root>/bench/models_07*.json` (each model alone on one GPU; root: a view's results
    folder), where those reports exist; else `train_s`, each run's own seconds."""
    prices = sorted((Path(root) / "bench").glob("models_07*.json"))
    return (bench_seconds(runs, prices), "gpu_s") if prices else (runs, "train_s")


def leaders(res: ExperimentResults, groups: dict, metric: str = "test_bpc") -> pd.DataFrame:
    """Per group of configurations (a budget, a width, a corpus): the one with the lowest mean
    `metric` (the leader), then every other one's paired difference to it over the seeds both ran."""
    out = []
    for setting, configs in groups.items():
        means = {c: res.value(c, metric) for c in configs if math.isfinite(res.value(c, metric))}
        lead = min(means, key=means.get)
        d = paired_differences(res.runs[res.runs["config"].isin(list(means))], lead, metric=metric)
        d = d.assign(verdict=separation(d)).rename(columns={"mean": "minus_leader"})
        out += [pd.DataFrame([{"setting": setting, "config": lead, "verdict": "leader"}]),
                d.assign(setting=setting).sort_values("minus_leader")]
    t = pd.concat(out, ignore_index=True)
    t.insert(2, metric, t["config"].map(lambda c: res.value(c, metric)))
    return t[["setting", "config", metric, "minus_leader", "ci_low", "ci_high", "n", "seeds_lower", "verdict"]]


def committed_budgets(res: ExperimentResults) -> dict[str, list[str]]:
    """{budget: its configurations with results}, in the registry's order, budgets without runs left out."""
    budgets = {b: [c for c in res.configs if c.endswith(f"_{b}")] for b in BUDGETS_07}
    return {b: configs for b, configs in budgets.items() if configs}


def missing_parts(scaling: ExperimentResults | None = None) -> list[str]:
    """What the study registers but has no committed runs of: whole experiments, then budgets.
    scaling: the committed `07_scaling`, when the caller has read it already."""
    have = {s: (paths.REPO_ROOT / "results" / s / "summary.json").is_file() for s in STEMS_07}
    out = [f"`{s}`" for s in STEMS_07 if not have[s]]
    if have["07_scaling"]:
        run = committed_budgets(scaling or committed_results("07_scaling"))
        out += [f"the {b} budget of `07_scaling`" for b in BUDGETS_07 if b not in run]
    return out


def _interval(q: Quote, r, verdict: str) -> str:
    """`[low, high] (n = k, verdict)` of a row with ci_low, ci_high and n; one seed has no interval."""
    if r.n < 2 or not (math.isfinite(r.ci_low) and math.isfinite(r.ci_high)):
        return f"(n = {r.n}: no interval)"
    return f"[{q.number(r.ci_low, 'low')}, {q.number(r.ci_high, 'high')}] (n = {r.n}, {verdict})"


class _Lines:
    """The takeaway bullets, each quoting the committed results it rests on."""

    def __init__(self, ctx: Context, stems) -> None:
        self.q = {s: Quote(ctx, s) for s in stems}
        self.full = {s: committed_results(s) for s in stems}

    def verdict(self, stem: str, a: str, b: str) -> str:
        """'lower', 'higher' or 'not separated': the paired interval of a − b (test bpc)."""
        return separation(paired_differences(self.full[stem].runs, {a: b}, metric="test_bpc")).iloc[0]

    def ranked(self, stem: str, configs) -> list[str]:
        """The configurations with a finite mean test bpc, lowest first."""
        means = {c: self.full[stem].value(c, "test_bpc") for c in configs}
        return sorted((c for c in means if math.isfinite(means[c])), key=means.get)

    def sweep(self) -> str:
        """Each model's chosen rate as a multiple of its 06 rate (the middle of its sweep)."""
        tried = scaling_runs(self.full["07_lr_sweep"].exp_dir).groupby("model")["lr"].unique()
        picked, q = best_lrs(self.full["07_lr_sweep"].exp_dir), self.q["07_lr_sweep"]

        def times(m: str) -> str:
            k = picked[m] / sorted(tried[m])[LR_MULTIPLIERS_07.index(1.0)]
            return f"×{k:g}" if k >= 1 else f"×1/{1 / k:g}"

        edge = [f"`{m}`" for m in picked if picked[m] in (min(tried[m]), max(tried[m]))]
        return ("- **The tuned rates** (validation bpc at the chosen rate, one seed): " + ", ".join(
            f"`{m}` {times(m)} its 06 rate ({q.ci(f'{m}_lr{picked[m]:g}')})" for m in picked) + "."
            + (f" At the edge of the sweep, so its best rate may lie outside: {', '.join(edge)}." if edge else ""))

    def budgets(self) -> list[str]:
        """Per budget run: the leader, the next one, HOPE's place; then whether HOPE's lead holds."""
        q, lines, place = self.q["07_scaling"], [], {}
        run = committed_budgets(self.full["07_scaling"])
        for b in run:
            order = self.ranked("07_scaling", [f"{m}_{b}" for m in MODELS_07])
            lead, hope = order[0], f"hope_{b}"
            text = f"- **{b} characters:** `{lead}` leads with test bpc {q.ci(lead, 'test_bpc')}"
            if len(order) > 1:
                text += (f"; the next, `{order[1]}`, is {q.diff(order[1], lead, 'test_bpc')} above it "
                         f"({self.verdict('07_scaling', order[1], lead)})")
            if hope not in order:
                place[b] = "no run"
            elif hope == lead:
                place[b] = "leads" if len(order) > 1 and self.verdict("07_scaling", order[1], lead) == "higher" else "tied"
            else:
                v = self.verdict("07_scaling", hope, lead)
                place[b] = "behind" if v == "higher" else "tied"
                text += f"; `hope` is {q.diff(hope, lead, 'test_bpc')} above the leader ({v})"
            lines.append(text + ".")
        where = {p: [b for b in run if place[b] == p] for p in ("leads", "tied", "behind")}
        word = "Yes" if len(where["leads"]) == len(run) else "No" if not where["leads"] else "Partly"
        lines.append(f"- **Does HOPE's lead hold with more characters? {word}, at the {len(run)} of "
                     f"{len(BUDGETS_07)} budgets run so far:** it leads, separated, at {', '.join(where['leads']) or 'none'}; "
                     f"tied with the leader at {', '.join(where['tied']) or 'none'}; behind at {', '.join(where['behind']) or 'none'}.")
        return lines

    def compute(self) -> list[str]:
        """What the others reach in the seconds of each of HOPE's budgets."""
        q = self.q["07_scaling"]
        costed, col = priced(paths.REPO_ROOT / "results", scaling_runs(self.full["07_scaling"].exp_dir))
        price = "its steps times its step time alone on one GPU" if col == "gpu_s" else "its own seconds"
        step_s = (costed[col] / costed["steps"]).groupby(costed["model"]).median()  # seconds per step
        unrun = [b for b in BUDGETS_07 if b not in committed_budgets(self.full["07_scaling"])]
        lines = []
        for ref, top in compute_matched(costed, reference="hope", seconds=col).groupby("reference", sort=False):
            ahead, ref_s = top[top["minus_reference"] < 0], top["reference_s"].iloc[0]
            fits = [(f"{m}_{b}", BUDGETS_07[b] * step_s[m]) for b in unrun for m in step_s.index
                    if m != "hope" and BUDGETS_07[b] * step_s[m] <= ref_s]
            lines.append(f"- **Equal compute, {ref}** (a run's seconds: {price}): in the "
                         f"{q.number(ref_s, f'seconds of {ref}', 0)} s that `{ref}` trains "
                         f"({q.ci(ref, 'test_bpc')}), " + (", ".join(
                             f"`{r.config}` reaches {q.number(r.bpc, f'mean test bpc of {r.config}')}"
                             for r in ahead.itertuples()) + " (unpaired means)" if len(ahead)
                             else "no other model run so far reaches a lower test bpc")
                         + ("; not run yet, though they would train in that time: " + ", ".join(
                             f"`{c}` ({q.number(s, f'priced seconds of {c}', 0)} s)" for c, s in fits) if fits else "") + ".")
        return lines

    def width(self) -> str:
        """The leader among the wide models, and wide minus 06 size per model, paired by seed."""
        wlead = self.ranked("07_width", self.full["07_width"].configs)
        narrow = self.full["07_scaling"].runs[self.full["07_scaling"].runs["config"].str.endswith("_33M")]
        pairs = pd.concat([narrow.assign(config=narrow["config"].str.removesuffix("_33M")),
                           self.full["07_width"].runs.assign(config=self.full["07_width"].runs["config"] + "_4x")],
                          ignore_index=True)
        wd = paired_differences(pairs, {f"{m}_4x": m for m in MODELS_07}, metric="test_bpc")
        wd, qw = wd.assign(verdict=separation(wd)), self.q["07_width"]
        return (f"- **Four times the parameters (33 M characters):** `{wlead[0]}` leads the wide models "
                f"({qw.ci(wlead[0], 'test_bpc')}); wide minus 06 size, paired by seed: " + ", ".join(
                    f"`{r.baseline}` {qw.number(r.mean, f'{r.config} - {r.baseline}')} " + _interval(qw, r, r.verdict)
                    for r in wd.itertuples()) + ".")

    def corpus(self) -> str:
        """The order on Tiny Shakespeare beside WikiText-2's at the same budget."""
        order_s = self.ranked("07_shakespeare", self.full["07_shakespeare"].configs)
        order_w = [c.removesuffix("_8.2M") for c in self.ranked("07_scaling", [f"{m}_8.2M" for m in MODELS_07])]
        qs = self.q["07_shakespeare"]
        return (f"- **Tiny Shakespeare (8.2 M characters):** from best, {', '.join(f'`{c}`' for c in order_s)}; on "
                f"WikiText-2 at the same budget {', '.join(f'`{c}`' for c in order_w)}. `{order_s[0]}` leads "
                f"({qs.ci(order_s[0], 'test_bpc')}), `{order_s[1]}` is {qs.diff(order_s[1], order_s[0], 'test_bpc')} "
                f"above it ({self.verdict('07_shakespeare', order_s[1], order_s[0])}).")

    def context(self) -> str:
        """The fall of the test bpc beyond the training window, at the largest budget run."""
        exp_dir = self.full["07_scaling"].exp_dir
        window = int(scaling_runs(exp_dir)["seq_len"].iloc[0])
        largest = list(committed_budgets(self.full["07_scaling"]))[-1]
        g = context_gain(pd.read_csv(exp_dir / "context_test.csv"), start=window)
        g, q = g[g["config"].str.endswith(f"_{largest}")], self.q["07_scaling"]
        trend = ["falls" if lo > 0 else "rises" if hi < 0 else "not separated" for lo, hi in zip(g["ci_low"], g["ci_high"])]
        return (f"- **Long context at {largest}** (the fall of the test bpc from the bin of T = {window} characters "
                f"read to the farthest bin holding 2 % of the predictions, per seed; positive: lower with more "
                f"context): " + ", ".join(
                    f"`{r.config}` {q.number(r.mean, f'context gain of {r.config}')} " + _interval(q, r, t)
                    for r, t in zip(g.itertuples(), trend)) + ".")


def scaling_takeaways(ctx: Context) -> str:
    """Markdown bullets for 07's takeaways from the committed full results of every 07 experiment
    that has them; a last bullet names what has no runs yet."""
    have = [s for s in STEMS_07 if (paths.REPO_ROOT / "results" / s / "summary.json").is_file()]
    if "07_scaling" not in have:
        return "No committed full results of `07_scaling` yet: run the commands of `docs/scaling.md` on a GPU."
    t = _Lines(ctx, have)
    lines = ([t.sweep()] if "07_lr_sweep" in have else []) + t.budgets() + t.compute()
    lines += ([t.width()] if "07_width" in have else []) + ([t.corpus()] if "07_shakespeare" in have else [])
    lines.append(t.context())
    missing = missing_parts(t.full["07_scaling"])
    if missing:
        lines.append(f"- **Not run yet:** {', '.join(missing)}. The study's question is answered only where runs exist.")
    return "\n".join(lines)
