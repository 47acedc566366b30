# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Ablations
# > Of every lever that notebooks 01–04 moved, which ones change held-out bits per character, in which direction, and by how much next to the seed-to-seed spread, at one and the same training budget?
#
# Notebooks 01–04 each vary one part of the system against a common baseline. This notebook
# puts every configuration they ran on one axis. All ran the same budget,
# $\text{steps} \times B$ windows of $T = 256$ characters, except `persistent_512` ($T = 512$:
# twice the characters, marked in the figure). Because every configuration ran on the same seeds
# and data order as the baseline, the sharp test is the **paired difference**: per seed
# $i$, $\delta_i = x_i - b_i$, and its Student-t 95 % interval
#
# $$
# \bar\delta \pm t_{n-1}\,\frac{s_\delta}{\sqrt n},\qquad
# s_\delta^2 = \frac{1}{n-1}\sum_{i=1}^n (\delta_i - \bar\delta)^2 ,
# $$
#
# with $t_{n-1}$ the 97.5 % quantile of Student's t distribution with $n - 1$ degrees of freedom.
# An ablation is **separated** from the baseline when that interval excludes zero. Several
# experiments share runs: the baseline of 02, 03 and 04 *is* `zero_init_ffn` of 01 (the same
# configuration, bit-identical numbers), and 04 `adamw` is 01 `all_adamw`. Such runs appear once.
#
# **What you'll see**
# 1. the experiments collected into one tidy frame, and which of their runs are the same;
# 2. one figure ranking every distinct configuration, grouped by the lever it moves, n per row;
#    the prototype's rows (its embedding and head are never trained) in a panel of their own;
# 3. a lever filter: pick levers and a metric, the ranking is redrawn;
# 4. the paired t interval computed by hand; the paired differences with their verdicts;
# 5. checks, takeaways quoted from `results/05_ablations/`, exercises.
#
# | view | what runs | runtime (2 CPU cores) |
# |---|---|---|
# | committed (default) | reads the committed `results/0[1-4]_*`; trains and writes nothing | seconds on any CPU |
# | smoke | reads `build/smoke/results/0[1-4]_*`, running the smoke grid of any that is missing; writes `build/smoke/results/05_ablations/` | under a minute on 2 CPU cores |
# | full | reads the committed `results/0[1-4]_*`, trains nothing, writes `results/05_ablations/` | seconds |
#
# Modules: `nlcore.report.notebook` (`collect_experiments`, `ablation_table`, `paired_differences`,
# `separation`), `nlcore.experiments` (the registry), `nlcore.report.figures`, `nlcore.stats`, `nlcore.results`.

# %% tags=["parameters"]
VIEW = "committed"  # committed: re-plot the committed results (CPU, seconds) | smoke: run small on a CPU | full: train on a GPU
SEED = 0  # seeds the notebook; this notebook trains nothing itself
DEVICE = "auto"  # "auto" | "cpu" | "cuda"

# %%
import math

import torch

import nlcore as nl

ctx = nl.notebook.setup("05_ablations", view=VIEW, seed=SEED, device=DEVICE)

# %% [markdown]
# ## The experiments, collected
# `collect_experiments` reads each registered experiment's `runs.csv` and, per configuration, the
# first run's `meta.json` (corpus, steps, $B$, $T$, prototype settings or not). In the smoke view
# an experiment whose smoke results are missing is run first through the registry.

# %%
frame = nl.notebook.collect_experiments(ctx, nl.notebook.ABLATION_STEMS)
frame.groupby("experiment").agg(configs=("config", "nunique"), seeds=("seed", "nunique"), corpus=("corpus", "first"))

# %% [markdown]
# ## One row per distinct configuration
# Two configurations whose per-seed validation bpc agree to the last digit on every seed are the
# same runs; they are kept once, under the first experiment's name. Only rows on this view's
# corpus are kept. The same configuration run at another code revision is *not* merged: 03
# `persistent_surprise` and 02 `wikitext2_w0.05_0.01` share their configuration but ran before
# and after a change to the surprise hooks (each run's `meta.json` records its revision), so both
# rows are shown. Below: the merged rows, then the budget of every row (`chars_ratio`: characters
# read in training relative to the baseline).

# %%
table = nl.notebook.ablation_table(frame, corpus=ctx.config.data.corpus)
table.loc[table["same_as"] != "", ["label", "lever", "same_as"]]

# %%
table.groupby(["steps", "batch_size", "seq_len", "chars_ratio"]).agg(rows=("label", "size"), labels=("label", ", ".join))

# %% [markdown]
# ## Every configuration, ranked within its lever
# Grouped by lever, the baseline on top; inside a group, best first. The dashed line and the grey
# band are the baseline's mean and 95 % t interval: a row whose interval overlaps the band may
# still be separated by the paired differences below, which remove the seed-to-seed variation
# the runs share. A row far worse than the rest is drawn as an arrow at the right edge, with its numbers.

# %%
fig = nl.figures.ablation_ranking(table)
fig.suptitle("Architecture (LayerNorm + residual) and the prototype's settings dwarf every other lever; "
             "the rest move validation bpc by hundredths\n(mean and 95 % t interval over seeds, grouped by lever)",
             fontsize=11)
ctx.show(fig, "ablation_ranking")

# %% [markdown]
# ### Lever filter
# Pick the levers to compare (ctrl/shift-click for several) and the metric; the baseline always
# stays. Without the large levers the axis zooms in to the small ones: that is where the seeds
# matter. The default shows the surprise objective, the state policy and the delta rule. (An
# executed copy shows the default state; open the notebook in JupyterLab with a kernel to use it.)

# %%
levers = [lv for lv in nl.figures.LEVER_COLORS if lv in set(table["lever"]) and lv != "baseline"]
nl.widgets.explore(
    lambda levers, metric: nl.figures.ablation_ranking(
        nl.notebook.select_levers(nl.notebook.ablation_table(frame, ctx.config.data.corpus, metric), levers), metric),
    levers=nl.widgets.many(levers, value=[lv for lv in levers if lv in ("surprise objective", "state policy", "delta rule")],
                           description="levers"),
    metric=nl.widgets.choice(["valid_bpc", "test_bpc"], description="metric"),
)

# %% [markdown]
# ## The paired interval, by hand
# One row of the committed results, `03_persistent_doc_resets` against the baseline: the three
# per-seed differences, their mean and sample standard deviation, and the t quantile. With
# $n = 3$ seeds (2 degrees of freedom) the t distribution's CDF is $\tfrac12 + \tfrac{t}{2\sqrt{2+t^2}}$,
# so its $0.975$ quantile has a closed form. The result equals `nlcore.stats.paired_diff_ci`.

# %%
full = nl.notebook.committed_results("05_ablations")
valid = full.runs[full.runs["metric"] == "valid_bpc"].pivot(index="seed", columns="config", values="value")
a, b = valid["03_persistent_doc_resets"], valid[full.meta["baseline"]]  # per-seed bpc, same seeds
delta = torch.tensor((a - b).to_numpy(), dtype=torch.float64)  # δ_i = x_i − b_i: (n,)
n, mean, s = delta.numel(), delta.mean().item(), delta.std().item()  # std with n − 1
alpha = 0.95  # two-sided level: the 0.975 quantile
t = alpha * math.sqrt(2 / (1 - alpha**2))  # t_{0.975, 2}: solves ½ + t / (2 √(2 + t²)) = 0.975
half = t * s / math.sqrt(n)
lib = nl.stats.paired_diff_ci(a.to_numpy(), b.to_numpy())
assert n == 3 and all(math.isclose(x, y, rel_tol=1e-9) for x, y in zip((mean, mean - half, mean + half), lib))
print(f"δ per seed {[round(x, 5) for x in delta.tolist()]}; t = {t:.4f}; mean {mean:+.5f}, "
      f"interval [{mean - half:+.5f}, {mean + half:+.5f}]: {'separated' if (mean + half) * (mean - half) > 0 else 'not separated'}")

# %% [markdown]
# ## Paired differences against the baseline
# The same computation for every row of this view (`nl.notebook.paired_differences`), with how
# many seeds came out lower and the verdict (`nl.notebook.separation`): "lower" or "higher" when
# the paired interval excludes zero, "not separated" when it holds zero. With one seed (smoke)
# there is no interval and nothing is separated.

# %%
runs = nl.notebook.ablation_runs(frame, table)
baseline = table.loc[table["lever"] == "baseline", "label"].iloc[0]
diffs = nl.notebook.paired_differences(runs, baseline).rename(columns={"config": "label"})
diffs = diffs.assign(verdict=nl.notebook.separation(diffs)).merge(table[["label", "lever", "chars_ratio"]], on="label")
diffs.sort_values("mean")[["label", "lever", "n", "mean", "ci_low", "ci_high", "seeds_lower", "verdict", "chars_ratio"]].round(4)

# %% [markdown]
# ## Results
# In the smoke and full views the distinct configurations' per-seed numbers go to this view's
# `05_ablations/` results (`runs.csv`, `summary.json`, `meta.json`) through the same helper as
# every experiment. The committed view writes nothing: `results/05_ablations/` is regenerated by
# running this notebook in the full view, `python -m nlcore notebooks --view full --only 05`.

# %%
meta = {"experiment": ctx.stem, "mode": ctx.mode, "sources": list(nl.notebook.ABLATION_STEMS),
        "corpus": ctx.config.data.corpus, "baseline": baseline,
        "same_runs": {r.label: r.same_as for r in table.itertuples() if r.same_as}}
if ctx.trains:
    written = nl.results.write_experiment(ctx.results_dir, runs, meta=meta)
    print(f"wrote {', '.join(sorted(written))} into {ctx.view}'s results/{ctx.results_dir.name}/")
else:
    print(f"committed view: nothing written; {len(table)} rows re-derived from the committed results of 01-04")

# %% [markdown]
# ## Checks
# These hold in every view: every experiment contributed; the baselines of 01–04 are one and the
# same set of runs; every row has the same steps and rows; only `persistent_512` read more
# characters (twice as many); every mean is finite and inside its interval. In the committed view,
# the rows re-derived from 01–04 equal the committed `results/05_ablations/`.

# %%
assert set(table["experiment"]) == set(nl.notebook.ABLATION_STEMS), set(table["experiment"])
base = table[table["lever"] == "baseline"]
twins = {t.split(" ")[0] for t in base["same_as"].iloc[0].split(", ")}
assert len(base) == 1 and {"02", "03", "04"} <= twins, f"baselines not merged (stale smoke results?):\n{base}"
assert table["steps"].nunique() == 1 and table["batch_size"].nunique() == 1, "rows at different budgets"
assert set(table.loc[table["chars_ratio"] != 1, "config"]) <= {"persistent_512", "prototype_persistent_512"}
assert (table.loc[table["config"].str.endswith("persistent_512"), "chars_ratio"] == 2).all()
ok = table[["ci_low", "ci_high"]].isna().all(axis=1) | table["mean"].between(table["ci_low"], table["ci_high"])
assert table["mean"].notna().all() and ok.all(), table
if ctx.view == "committed":
    committed = {r["config"]: r["mean"] for r in full.summary if r["metric"] == "valid_bpc"}
    assert all(math.isclose(committed[r.label], r.mean, rel_tol=1e-12) for r in table.itertuples()), "results/05 is stale"
print(f"{len(table)} distinct configurations from {len(frame.groupby(['experiment', 'config']))} registered ones")

# %% [markdown]
# ## Takeaways
# From the committed full results (3 seeds per row, WikiText-2), whatever the view. The lists are
# drawn from the paired intervals, so a row is called separated only when its interval excludes zero.

# %%
q, full = nl.notebook.Quote(ctx, "05_ablations"), nl.notebook.committed_results("05_ablations")  # as written above
fd = nl.notebook.paired_differences(full.runs, full.meta["baseline"]).merge(
    full.runs[["config", "lever"]].drop_duplicates(), on="config").sort_values("mean")
fd["verdict"] = nl.notebook.separation(fd)
ours = fd[fd["lever"] != "the prototype's settings"]
row = lambda r: f"`{r.config}` {q.diff(r.config, full.meta['baseline'], digits=4)}"  # noqa: E731
pick = {v: "; ".join(row(r) for r in ours[ours["verdict"] == v].itertuples()) for v in ("lower", "higher", "not separated")}
proto = fd[fd["lever"] == "the prototype's settings"]
assert ours["mean"].idxmax() == ours.index[ours["config"] == "01_no_norm_residual"][0] and (proto["verdict"] == "higher").all()
assert proto["mean"].min() > ours["mean"].max() - ours["mean"].min()  # "more than the whole range"
assert ours.loc[ours["config"] == "03_persistent_512", "verdict"].iloc[0] == "lower"  # the 2x-characters row

# %%
nl.notebook.takeaways(ctx, f"""
Paired differences against the baseline `{full.meta['baseline']}` ({q.ci(full.meta['baseline'])} valid bpc), mean and 95 % t interval:
- **The prototype's settings and the architecture dwarf everything else.** Every prototype row is higher by more than the whole range of the other rows (best: {row(proto.iloc[0])}); removing LayerNorm + residual around the FFN levels is the largest loss among this repository's settings: {row(ours[ours['config'] == '01_no_norm_residual'].iloc[0])}.
- **Separated, lower than the baseline:** {pick['lower']}. (`03_persistent_512` read twice the characters: not a same-budget comparison.)
- **Separated, higher than the baseline:** {pick['higher']}.
- **Not separated from the baseline** (the interval holds zero, even where every seed came out lower): {pick['not separated']}.
""")

# %% [markdown]
# ## Exercises
# Predict first, then run the cell.
#
# 1. With only two seeds (0 and 1), the t quantile grows from about 4.3 to about 12.7. Which
#    separations survive?

# %%
two = nl.notebook.paired_differences(full.runs[full.runs["seed"] < 2], full.meta["baseline"])
two.assign(verdict=nl.notebook.separation(two)).query("verdict != 'not separated'")[["config", "mean", "ci_low", "ci_high", "verdict"]].round(4)

# %% [markdown]
# <details><summary>Solution</summary>
#
# Fewer than with three seeds, but not only the large ones: a row whose two per-seed differences
# happen to agree closely keeps a narrow interval even with $t \approx 12.7$, while rows with larger
# effects but less consistent seeds (`01_cms_off`, the delta-rule rows) lose their separation.
# With two seeds the spread is estimated from a single pair of numbers, so a narrow two-seed
# interval is luck as much as evidence: the third seed is what makes the spread trustworthy.
# </details>
#
# 2. Is the verdict the same on test bits per character? Predict which rows change, then use the
#    `metric` control of the lever filter, or run:

# %%
test = nl.notebook.paired_differences(full.runs, full.meta["baseline"], metric="test_bpc")
test = test.assign(verdict=nl.notebook.separation(test)).merge(fd[["config", "verdict"]], on="config", suffixes=("_test", "_valid"))
test[test["verdict_test"] != test["verdict_valid"]][["config", "mean", "ci_low", "ci_high", "verdict_test", "verdict_valid"]].round(4)

# %% [markdown]
# <details><summary>Solution</summary>
#
# The rows listed are those whose verdict flips; they are the ones whose validation interval sat
# close to zero. Validation and test text are different slices of WikiText-2, so a small effect
# can clear zero on one and not on the other: one more reason to call such effects "not
# separated" rather than "no effect".
# </details>
#
# 3. The percentile bootstrap over 3 seeds: how many distinct resampled means can it produce, and
#    is its interval wider or narrower than the t interval?

# %%
x = valid[full.meta["baseline"]].to_numpy()
print(f"baseline per seed {x.round(4).tolist()}: t interval {nl.stats.t_ci(x)[1:]}, bootstrap {nl.stats.bootstrap_ci(x)[1:]}")

# %% [markdown]
# <details><summary>Solution</summary>
#
# Ten (the multisets of size 3 from 3 values), all between the smallest and the largest seed, so
# the bootstrap interval can never reach past the seeds themselves and is much narrower than the
# t interval: it understates the uncertainty with so few seeds, which is why every interval in
# this series is a Student-t one.
# </details>
