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
# # 08 · Continual learning
# > A model trained on WikiText-2 goes on training on Tiny Shakespeare. How much of WikiText-2 does it forget, how fast does it learn Shakespeare, and do levels updated at different frequencies change that trade-off?
#
# Nested Learning's motivation is a model that keeps learning: each level updates at its own
# frequency, so the slow levels should keep what the fast ones overwrite. This notebook tests
# that claim in the simplest protocol that can show it. Every model is trained on corpus A
# (WikiText-2, experiment 06's full run: 1000 steps of 16 × 512 characters), then the **same**
# weights and optimizer states continue on corpus B (Tiny Shakespeare) for 500 steps. Held-out
# bits per character on both corpora are measured at the switch and every 50 steps of phase B.
# With $a_k$ and $b_k$ the validation bpc on A and on B at evaluation point $k$ (point 0: the end
# of phase A, point $K$: the end of phase B),
#
# $$
# \text{forgetting} = a_K - a_0 ,\qquad \text{learning} = b_0 - b_K .
# $$
#
# Forgetting is a rise (lower is better), learning a fall (higher is better). One vocabulary
# serves both corpora (the sorted union of their training characters), so one embedding and one
# output head read and write both. The recurrent state is reset at the switch: what phase A
# learned reaches phase B only through the weights and the optimizer states. `docs/continual.md`
# has the protocol in full.
#
# The models: the nested LSTM with its CMS levels at chunks 1, 16 and 256 (`nested_lstm`) and
# the same model with every level updated every step by AdamW (`nested_lstm_cms_off`); HOPE with
# its chain written inside the forward pass (`hope`), by the outer CMS engine (`hope_outer`) and
# not at all (`hope_static`); the Transformer; Titans with a linear memory. 3 seeds each; every
# comparison is paired by seed.
#
# **What you'll see**
# 1. forgetting and learning per model, with 95 % t intervals;
# 2. forgetting and learning computed by hand from one run's evaluation points;
# 3. both corpora's held-out bpc over phase B, with a model picker;
# 4. the trade-off between forgetting and learning, one point per model;
# 5. paired differences against the Transformer and against CMS off, and the answer.
#
# | view | what runs | runtime (2 CPU cores) |
# |---|---|---|
# | committed (default) | re-plots the committed `results/08_continual/` (3 seeds) | seconds on any CPU |
# | smoke | every configuration shrunk to a few thousand parameters × 1 seed, two synthetic corpora | under a minute on 2 CPU cores |
# | full | `python -m nlcore experiment 08_continual --mode full`: 3 seeds, WikiText-2 then Tiny Shakespeare | GPU: see `docs/reproduce.md` |
#
# Modules: `nlcore.training.continual` (`run_continual`: the two phases and the evaluation
# points), `nlcore.data` (`joint_tokenizer`), `nlcore.experiments` (the registry),
# `nlcore.report.figures.continual` (this notebook's figures).

# %% tags=["parameters"]
VIEW = "committed"  # committed: re-plot the committed results (CPU, seconds) | smoke: run small on a CPU | full: train on a GPU
SEED = 0  # seeds the notebook; each run seeds itself from its configuration
DEVICE = "auto"  # "auto" | "cpu" | "cuda"

# %%
import math

import pandas as pd

import nlcore as nl

ctx = nl.notebook.setup("08_continual", view=VIEW, seed=SEED, device=DEVICE)

# %% [markdown]
# ## The experiment
# The committed view reads the full results; smoke runs every configuration small on two
# synthetic corpora (corpus B has another transition matrix) into `build/smoke/`: it shows the
# pipeline runs, not which model forgets less. The table: forgetting and learning per model
# (validation bpc), mean and 95 % t interval over seeds, and the bpc on both corpora at the
# switch and at the end.

# %%
exp = nl.notebook.experiment(ctx)
configs = exp.configs
metrics = ["forgetting_bpc", "learning_bpc", "a_valid_bpc_after_a", "a_valid_bpc_end", "b_valid_bpc_after_a",
           "b_valid_bpc_end"]
nl.figures.summary_table(exp.summary, metrics=metrics, order=configs)

# %% [markdown]
# ## From scratch: forgetting and learning of one run
# Each run writes one line per evaluation point to `continual.jsonl`. Forgetting and learning
# are differences of its first and last lines, nothing else; below, for one run, by hand, and
# against what the run's `summary.json` recorded.

# %%
run = exp.run_dirs(configs[0])[0]
points = nl.results.read_metrics(run / "continual.jsonl")  # one dict per evaluation point
first, last = points[0], points[-1]
forgetting = last["a_valid_bpc"] - first["a_valid_bpc"]  # a_K − a_0: the rise on A
learning = first["b_valid_bpc"] - last["b_valid_bpc"]  # b_0 − b_K: the fall on B
summary = nl.results.read_json(run / "summary.json")
assert math.isclose(forgetting, summary["forgetting_bpc"], rel_tol=1e-12)
assert math.isclose(learning, summary["learning_bpc"], rel_tol=1e-12)
print(f"{run.parent.name}/{run.name}: {len(points)} points, phase-B steps {[p['step_b'] for p in points]}\n"
      f"forgetting {forgetting:+.4f} bpc, learning {learning:+.4f} bpc; vocabulary of {summary['vocab_size']} "
      f"characters shared by both corpora")

# %% [markdown]
# ## Both corpora over phase B
# Left: validation bpc on A (WikiText-2), which phase B does not train on; right: on B (Tiny
# Shakespeare), which it does. Step 0 is the end of phase A. Mean across seeds with a 95 % t band.

# %%
table = nl.figures.continual_points(exp.exp_dir)
fig = nl.figures.continual_curves(table, configs)
fig.suptitle("Training on B raises the bpc on A and lowers it on B, for every model\n"
             "(validation bpc, mean across seeds, 95 % t band)", fontsize=11)
ctx.show(fig, "continual_curves")

# %% [markdown]
# ### Model picker
# The same curves for the models you pick, as the change since the switch (each seed minus its
# own point 0) or as the bpc itself. The change removes each model's level at the switch, so the
# slopes compare directly. (An executed copy shows the default state; open the notebook in
# JupyterLab with a kernel to use it.)

# %%
nl.widgets.explore(
    lambda models, relative: nl.figures.continual_curves(table, models or configs[:1], relative=relative),
    models=nl.widgets.many(configs, value=[c for c in configs if c in ("nested_lstm", "nested_lstm_cms_off",
                                                                         "transformer")] or configs[:2],
                           description="models"),
    relative=nl.widgets.toggle(True, description="change since the switch"),
)

# %% [markdown]
# ## The trade-off
# One point per model: forgetting (x) against learning (y), each with its 95 % t interval. A
# model that learns B by overwriting A moves up and to the right; a model that keeps A and
# still learns B sits up and to the left.

# %%
fig = nl.figures.tradeoff(exp.summary, configs)
fig.suptitle("Forgetting A against learning B over 500 steps of phase B\n"
             "(validation bpc, mean and 95 % t interval over seeds)", fontsize=11)
ctx.show(fig, "continual_tradeoff")

# %% [markdown]
# ## Paired differences
# Every model ran the same seeds, so the sharp comparison is per seed. Against the Transformer
# (every model), and the nested LSTM against its CMS-off twin: the difference in forgetting and
# in learning, mean and paired t interval, with how many seeds came out lower. A negative
# forgetting difference is less forgetting; a positive learning difference is more learning.

# %%
baselines = {c: "transformer" for c in configs if c != "transformer"}
diffs = []
for metric in ("forgetting_bpc", "learning_bpc"):
    for base in (baselines, {"nested_lstm": "nested_lstm_cms_off"}):
        d = nl.notebook.paired_differences(exp.runs, base, metric=metric).assign(metric=metric)
        diffs.append(d.assign(verdict=nl.notebook.separation(d)))
diffs = pd.concat(diffs, ignore_index=True)
diffs[["metric", "config", "baseline", "n", "mean", "ci_low", "ci_high", "seeds_lower", "verdict"]].round(4)

# %% [markdown]
# ## Checks
# These hold in every view: every configuration has finished runs; every run has its
# evaluation points in order, the first at the switch and the last at the end of phase B; every
# number is finite; phase B lowered the bpc on B for every run (it trains on B).

# %%
assert len(configs) > 0 and set(table["config"]) == set(configs), (configs, set(table["config"]))
for (config, seed), p in table.groupby(["config", "seed"]):
    assert p["step_b"].is_monotonic_increasing and p["step_b"].iloc[0] == 0, (config, seed)
assert table[["a_valid_bpc", "b_valid_bpc"]].abs().lt(float("inf")).all().all(), table
learned = exp.runs[exp.runs["metric"] == "learning_bpc"]
assert (learned["value"] > 0).all(), learned
print(f"{len(configs)} configurations, {table.groupby(['config', 'seed']).ngroups} runs, "
      f"{table['point'].max() + 1} evaluation points each")

# %% [markdown]
# ## Takeaways
# From the committed full results (3 seeds per model, the same seeds and data order for every
# model, so differences are paired by seed). The verdicts are read from the paired intervals: a
# difference is called separated only when its interval excludes zero.

# %%
have = (nl.paths.REPO_ROOT / "results" / "08_continual" / "summary.json").is_file()
full = nl.notebook.committed_results("08_continual") if have else None
missing = [c for c in configs if full is None or c not in {r["config"] for r in full.summary}]
if missing:  # the takeaways need the full runs of every configuration
    print(f"the committed full results of 08_continual lack {', '.join(missing)}: the takeaways wait for "
          "them (`python -m nlcore experiment 08_continual --mode full --configs ...` on a GPU)")
else:
    nl.notebook.takeaways(ctx, nl.notebook.continual_takeaways(nl.notebook.Quote(ctx, "08_continual"), full))


# %% [markdown]
# ## Exercises
# 1. *Predict, then check:* a model that learns nothing in phase B forgets nothing. Which point
#    of the trade-off figure is that model, and what does it say about reading forgetting alone?
#
# <details><summary>Solution</summary>
#
# The origin (0, 0). Forgetting alone rewards a model for not learning: a smaller rise on A is
# only an advantage at equal or greater learning on B. That is why the figure plots both, and
# why the answer above reports the learning difference beside the forgetting difference.
# </details>
#
# 2. In the curves, the bpc on A of some models rises fast in the first 50 steps of phase B and
#    then slowly. What in the protocol makes the first steps special? (Hint: the learning-rate
#    schedule of phase B, `docs/continual.md`.)
#
# <details><summary>Solution</summary>
#
# Phase B runs phase A's schedule again over its own 500 steps: a warm-up, then a cosine decay
# from the peak learning rate. The largest steps on B come early, and with them the fastest
# movement away from A; as the rate decays, so does the drift.
# </details>
