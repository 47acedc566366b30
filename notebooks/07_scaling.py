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
# # 07 · Scaling
# > In lesson 06 HOPE has the lowest held-out bpc of the models compared, at one size and one budget of WikiText-2. Does that lead hold with more characters, more width, a learning rate tuned per model, at equal compute, on another corpus, and over long contexts?
#
# A lead measured at one point can belong to that point: to a learning rate that happens to
# suit one model, to a budget at which the others have not caught up, to one corpus. This
# lesson moves one of those things at a time, always for the same six models at lesson 06's
# shape (windows of 16 × 512 characters, a cosine schedule with 100 warm-up steps): the nested
# LSTM, the Transformer, Titans with an MLP memory (`titans_norm`, the one that trains) and a linear one
# (`titans_linear`), HOPE (`hope`), and HOPE's chain stepped as CMS levels (`hope_outer`).
#
# | experiment | what it moves | characters (steps of 16 × 512) | seeds |
# |---|---|---|---|
# | `07_lr_sweep` | the fast level's learning rate: 06's × 1/4, 1/2, 1, 2, 4 | 8.2 M (1000) | 1 |
# | `07_scaling` | the budget, each its own run with its own schedule | 8.2 M, 33 M, 131 M (1000, 4000, 16000) | 3 |
# | `07_width` | about 4× the parameters (d_model doubled) | 33 M (4000) | 3 |
# | `07_shakespeare` | the corpus: Tiny Shakespeare | 8.2 M (1000) | 3 |
#
# The score is held-out bits per character: over the $N$ characters of a split,
#
# $$
# \text{bpc} = -\frac1N \sum_{i=1}^{N} \log_2 q(c_i \mid c_{<i}) .
# $$
#
# Equal characters is not equal cost: a HOPE step takes several Transformer steps (lesson A1). The
# cost of a run is the time it spends in training steps, $s = \text{steps}\cdot B\cdot T \,/\,
# \text{(characters per second)}$, so each run is also placed by its seconds. Every model runs
# the same seeds and data order, so a comparison with the leader is a paired difference per
# seed, with its Student-t 95 % interval. Last, on the trained models, the test bpc is split by
# how many characters of its article each prediction has read (`docs/scaling.md` has the plan
# and the commands).
#
# **What you'll see**
# 1. the learning-rate sweep and the rate each model trains with;
# 2. test bpc against training characters, 8.2 M to 131 M;
# 3. one run's seconds of training computed by hand from `runs.csv`;
# 4. the same runs against their seconds, and what each model reaches in HOPE's time;
# 5. who leads at each budget and by how much, paired by seed;
# 6. four times the parameters; 7. Tiny Shakespeare against WikiText-2;
# 8. test bpc against the characters read since the article start, with a picker;
# 9. checks, takeaways, exercises.
#
# | view | what runs | runtime (2 CPU cores) |
# |---|---|---|
# | committed (default) | re-plots the committed `results/07_*/` | seconds on any CPU |
# | smoke | the four registered smoke grids (a few thousand parameters × 1 seed, 20 to 80 steps, the synthetic corpus in place of both corpora), then the long-context measurement on their checkpoints | under 20 s on 2 CPU cores |
# | full | the commands of `docs/scaling.md` on a GPU (about 2 to 3 hours of training steps) | GPU |
#
# Parts of the study still wait for a GPU: the setup cell prints which, a section whose runs are
# missing says so instead of drawing, and the last takeaway names them.
#
# The smoke grids are small on purpose: the sweep, the width and the second corpus run the
# nested LSTM and HOPE, the budgets HOPE alone, so the smoke view shows that the pipeline runs,
# not who leads. Finished smoke runs of `07_lr_sweep`, `07_width` and `07_shakespeare` are kept
# in `build/smoke/results/` between executions (delete them to train them again).
#
# Modules: `nlcore.experiments` (the registry: `LR_07`, `BUDGETS_07`), `nlcore.experiments.scaling`
# (`best_lrs`, `context_of_run`, `context_table`), `nlcore.training.evaluate` (`bpc_by_context`),
# `nlcore.report.figures.scaling` (this notebook's tables and figures), `nlcore.report.notebook.scaling`
# (the other 07 experiments, prices, leaders, takeaways).

# %% tags=["parameters"]
VIEW = "committed"  # committed: re-plot the committed results (CPU, seconds) | smoke: run small on a CPU | full: train on a GPU
SEED = 0  # seeds the notebook; each run seeds itself from its configuration
DEVICE = "auto"  # "auto" | "cpu" | "cuda"

# %%
import math

import pandas as pd
from IPython.display import display

import nlcore as nl
from nlcore.experiments.registry import LR_07, MODELS_07
from nlcore.experiments.scaling import best_lrs, context_of_run, context_table
from nlcore.report.notebook.scaling import committed_budgets, leaders, missing_parts, priced, study

ctx = nl.notebook.setup("07_scaling", view=VIEW, seed=SEED, device=DEVICE)
if not ctx.trains:  # the committed study's gaps
    print("not run yet: " + (", ".join(missing_parts()) or "nothing"))

# %% [markdown]
# ## Step 1: the learning-rate sweep
# Only the fast level's AdamW rate is swept (the nested LSTM's CMS levels and `hope_outer`'s
# chain keep their 06 optimizers), at 8.2 M characters with one seed per rate: a difference
# between two rates is read without an interval, so a choice between two rates closer than
# the seed-to-seed spread of the budgets below is a tie broken by chance. The rate chosen is
# the one with the lowest **validation** bpc (`best_lrs`); the test split is never used to
# choose. The budgets, the width and the second corpus then train with `LR_07` of the
# registry, which has to hold that choice (`docs/scaling.md`, step 2): the cell checks it
# before anything else trains. The smoke sweep tries each model's 06 rate only, so every
# choice there lies at the edge of its sweep, and `best_lrs` says so.

# %%
sweep = study(ctx, "07_lr_sweep")
sweep_runs = nl.figures.scaling_runs(sweep.exp_dir)  # one row per run: rate, bpc, seconds, ...
chosen = best_lrs(sweep.exp_dir)  # {model: rate} with the lowest mean validation bpc
rates = sweep_runs.groupby("model", sort=False)["lr"].agg(lambda s: sorted(s.unique())).rename("rates tried").to_frame()
rates["chosen"], rates["LR_07 (trained with)"] = pd.Series(chosen), pd.Series(LR_07)
assert all(math.isclose(LR_07[m], lr) for m, lr in chosen.items()), \
    "LR_07 in nlcore/experiments/registry.py must hold the sweep's choice (docs/scaling.md, step 2)"
rates

# %%
fig = nl.figures.sweep_curves(sweep_runs, chosen, MODELS_07)
fig.suptitle("The rate each model trains with: the lowest validation bpc of its sweep\n"
             "(8.2 M characters in full, one seed per rate: no interval)", fontsize=11)
ctx.show(fig, "lr_sweep")

# %% [markdown]
# ## Step 2: more characters
# Every model at three budgets, 8.2 M, 33 M and 131 M characters (1, 4 and 16 times 06's),
# three seeds each. A budget is its own run whose cosine schedule ends at its own last step:
# the 8.2 M point is not the 131 M run stopped early. The table: validation and test bpc per
# configuration, mean and 95 % t interval over seeds; the figure: test bpc against the training
# characters on a log axis, mean over seeds with its interval.

# %%
exp = nl.notebook.experiment(ctx)
runs = nl.figures.scaling_runs(exp.exp_dir)
nl.figures.summary_table(exp.summary, metrics=["valid_bpc", "test_bpc"], order=exp.configs)

# %%
points = nl.figures.scaling_points(runs, "chars", "test_bpc")  # per configuration: n, mean, interval
first = points.loc[points.groupby("x")["mean"].idxmin()]  # the lowest mean at each budget
fig = nl.figures.scaling_curves(runs, x="chars", models=MODELS_07)
fig.suptitle("Lowest mean test bpc per budget: " + ", ".join(f"{b} {m}" for b, m in zip(first["budget"], first["model"]))
             + "\n(mean over seeds, 95 % t interval)", fontsize=11)
ctx.show(fig, "bpc_vs_characters")

# %% [markdown]
# ## From scratch: the seconds of one run
# What a run costs is the time it spends in training steps. Its summary records that time
# (`train_time_s`: evaluation and start-up left out) and the throughput it implies
# (`chars_per_s`, the value `runs.csv` keeps); the characters are the schedule's
# steps × B × T from its `meta.json`. Below, for one run, the seconds from `runs.csv`'s
# throughput by hand, against what the run recorded and what the figures use (`train_s`).

# %%
run = exp.run_dirs(exp.configs[0])[0]
config, seed = run.parent.name, int(run.name[4:])
cfg = nl.results.read_json(run / "meta.json")["config"]
chars = cfg["steps"] * cfg["data"]["batch_size"] * cfg["data"]["seq_len"]  # steps × B × T
rows = exp.runs[(exp.runs["config"] == config) & (exp.runs["seed"] == seed)]
cps = rows.loc[rows["metric"] == "chars_per_s", "value"].item()  # characters per second of training
seconds = chars / cps
recorded = nl.results.read_json(run / "summary.json")["train_time_s"]
assert math.isclose(seconds, recorded, rel_tol=1e-6)  # runs.csv keeps 8 significant digits
assert math.isclose(seconds, runs.set_index(["config", "seed"]).loc[(config, seed), "train_s"], rel_tol=1e-6)
print(f"{config}/seed{seed}: {chars:,} characters / {cps:,.0f} characters per second = {seconds:.2f} s "
      f"(recorded: {recorded:.2f} s, on {runs['device'].iloc[0]})")

# %% [markdown]
# ## Equal compute
# The same runs, placed by their seconds in training steps instead of their characters: a
# model to the left of another at the same bpc got there in less time. A run's own seconds are
# a poor price: the runs of one call share a GPU (several side by side), and calls land on an
# H100 or an H200. So each run is priced at its model's step time measured alone on one GPU
# (`results/bench/models_07*.json`, made by `scripts/reproduce/scaling_07.sh ... bench bench_wide`): steps
# × step time, the same for every seed. Without that report (the smoke view) the runs' own
# seconds stand in, and the axis says which it is. The table below: at each of HOPE's budgets,
# the lowest test bpc each other model reaches in no more seconds than HOPE's (blank: even its
# smallest budget takes longer).

# %%
costed, cost_col = priced(ctx.results_dir.parent, runs)  # gpu_s (one GPU's step times) or train_s (the runs' own)
matched = nl.figures.compute_matched(costed, reference="hope", seconds=cost_col)  # at each of HOPE's budgets
finding = "; ".join(f"{int((g['minus_reference'] < 0).sum())} of {len(g)} in {ref}'s {g['reference_s'].iloc[0]:.0f} s"
                    for ref, g in matched.groupby("reference", sort=False)) or "none ran beside hope"
fig = nl.figures.scaling_curves(costed, x=cost_col, models=MODELS_07)
fig.suptitle(f"Other models below HOPE's test bpc: {finding}\n(mean over seeds, 95 % t interval)", fontsize=11)
ctx.show(fig, "bpc_vs_seconds")
matched.round(4)

# %% [markdown]
# ## Who leads, and by how much
# At each budget, the configuration with the lowest mean test bpc leads; every other one is
# compared with it seed by seed (`paired_differences`: the mean of the per-seed differences and
# its t interval, n the seeds both ran, `seeds_lower` how many seeds came out below the leader).
# A difference is separated (`higher`) only when its whole interval lies above zero; with one
# seed there is no interval and nothing is separated.

# %%
budgets = committed_budgets(exp)  # {budget: its configurations}, budgets without runs left out
leaders(exp, budgets).round(4)

# %% [markdown]
# ## Four times the parameters
# At 33 M characters, each model at 06's size (from `07_scaling`) and at about four times its
# parameters (`07_width`: d_model doubled, the head width kept, d_ff matched to the
# Transformer's count), with the rates chosen at 06's size. One line per model from the small
# to the wide configuration, parameters on a log axis. Below the figure: wide minus 06 size,
# paired by seed (both ran seeds 0, 1, 2 with the same data order), then the leader among the
# wide models.

# %%
width = study(ctx, "07_width")  # None while it has no committed runs
if width is not None:
    wide = pd.concat([runs[runs["budget"] == "33M"], nl.figures.scaling_runs(width.exp_dir)], ignore_index=True)
    size = nl.figures.scaling_points(wide, "params", "test_bpc").sort_values("x")
    wider = size.groupby("model")["mean"].agg(lambda s: s.iloc[-1] - s.iloc[0])[size.groupby("model").size() > 1]
    fig = nl.figures.scaling_curves(wide, x="params", models=MODELS_07)
    fig.suptitle(f"Four times the parameters at 33 M characters: lower mean test bpc for {int((wider < 0).sum())} "
                 f"of {len(wider)} models\n(mean over seeds, 95 % t interval)", fontsize=11)
    ctx.show(fig, "bpc_vs_parameters")

# %%
if width is not None:
    narrow = exp.runs[exp.runs["config"].str.endswith("_33M")]
    pairs = pd.concat([narrow.assign(config=narrow["config"].str.removesuffix("_33M") + " (06 size)"),
                       width.runs.assign(config=width.runs["config"] + " (4x)")], ignore_index=True)
    d = nl.notebook.paired_differences(pairs, {f"{m} (4x)": f"{m} (06 size)" for m in MODELS_07}, metric="test_bpc")
    display(d.assign(verdict=nl.notebook.separation(d)).round(4))
    display(leaders(width, {"4x parameters, 33 M characters": width.configs}).round(4))

# %% [markdown]
# ## Another corpus
# The same models at 8.2 M characters of Tiny Shakespeare (about eight passes over its train
# split), with the rates chosen on WikiText-2. Bits per character on two corpora are not on
# one scale (the corpora differ in how predictable they are), so each panel has its own axis
# and what compares is the order: best on top, rank and n on each row. Below: the leader on
# Tiny Shakespeare and the paired differences to it.

# %%
shakespeare = study(ctx, "07_shakespeare")
corpora = {"07_scaling, 8.2M": runs[runs["budget"] == "8.2M"], "07_shakespeare": nl.figures.scaling_runs(shakespeare.exp_dir)}
tops = {k: nl.figures.scaling_points(r, "chars", "test_bpc").sort_values("mean")["model"].iloc[0] for k, r in corpora.items()}
fig = nl.figures.ranking_panels({f"{k}: {r['corpus'].iloc[0]}": r for k, r in corpora.items()})
fig.suptitle(("The same model leads on both corpora: " + tops["07_shakespeare"] if len(set(tops.values())) == 1 else
              "The leader changes with the corpus: " + ", ".join(f"{m} ({k})" for k, m in tops.items()))
             + "\n(test bpc, mean over seeds, 95 % t interval)", fontsize=11)
ctx.show(fig, "ranking_two_corpora")
leaders(shakespeare, {"Tiny Shakespeare, 8.2 M characters": shakespeare.configs}).round(4)

# %% [markdown]
# ## Long context: bpc against the characters an article has given
# `bpc_by_context` reads every article of the test split from its first character with the
# zero state, in windows of the run's $T$ with the state carried, and puts the prediction of the
# character at offset $p$ of its article, which has read $p$ characters, in the bin
# $[2^k, 2^{k+1})$ holding $p$. The overall bpc is the count-weighted mean of the bins (the
# checks below verify it for every run). It needs each run's `checkpoint.pt`, which git does
# not keep: the smoke and full views measure every run not measured yet on this machine
# (`python -m nlcore evaluate-context` does the same from a shell) and collect the bins with
# `context_table`; the committed view reads the `context_test.csv` that the GPU session wrote.
#
# The Transformer is stateless: it sees at most its window of $T$ characters (the dotted line),
# so beyond $T$ its loss can only stay level. A model that carries state can keep lowering its
# loss as the article goes on. The lower panel counts the predictions in each bin: the far bins
# rest on the longest articles only, so a bin's level mixes position and article, while within
# one bin every model reads the same articles. The bpc axis spans the bins from 64 characters
# on: an article's first characters (its title, read from the zero state) cost many times more,
# and the figure's title says how much.

# %%
measured = [r for r in (exp, width) if r is not None]  # the 07 experiments with a context measure
for res in measured:
    if ctx.trains:  # the checkpoints are on this machine: measure what has no bpc_by_context_test.json yet
        for run in (r for c in res.configs for r in res.run_dirs(c)):
            if not (run / "bpc_by_context_test.json").is_file():
                context_of_run(run, device=ctx.device)
context = pd.concat([(context_table(r.exp_dir) if ctx.trains else pd.read_csv(r.exp_dir / "context_test.csv"))
                     .assign(experiment=r.exp_dir.name) for r in measured], ignore_index=True)
context.groupby(["experiment", "config"]).agg(seeds=("seed", "nunique"), bins=("bin_lo", "nunique"))

# %%
T = int(runs["seq_len"].iloc[0])  # the training window
settings = dict(budgets) | ({"4x parameters, 33M": width.configs} if width is not None else {})
largest = list(budgets)[-1]
gain = nl.figures.context_gain(context, start=T)  # per configuration: the fall from the bin of T to the far bins
falls = gain[gain["config"].isin(settings[largest]) & (gain["mean"] > 0)]["config"].tolist()
fig = nl.figures.context_curves(context, settings[largest], window=T)
fig.suptitle(f"Budget {largest}: beyond T = {T} characters the mean test bpc still falls for "
             f"{', '.join(falls) or 'no model'}\n(mean over seeds, 95 % t band)", fontsize=11)
ctx.show(fig, "bpc_vs_context")
gain.round(4)

# %% [markdown]
# ### Picker
# The same figure for another budget or for the wide models. (An executed copy shows the default
# state; open the notebook in JupyterLab with a kernel to use it.)

# %%
nl.widgets.explore(lambda setting: nl.figures.context_curves(context, settings[setting], window=T),
                   setting=nl.widgets.choice(list(settings), value=largest, description="configurations"))

# %% [markdown]
# ## Checks
# These hold in every view: every finished run has a finite validation and test bpc and
# training time; each budget trains one number of characters, steps × B × T, growing with its steps; the
# runs trained with the rates the sweep chose; each run's seconds are its characters over its
# throughput; every finished run's overall context bpc is the count-weighted mean of its bins.

# %%
table = pd.concat([sweep_runs, runs, corpora["07_shakespeare"]] + [nl.figures.scaling_runs(r.exp_dir) for r in measured[1:]],
                  ignore_index=True)
done = table[table["status"] == "finished"]
assert done[["valid_bpc", "test_bpc", "train_s"]].abs().lt(float("inf")).all().all(), done
by_budget = runs.groupby("budget")[["steps", "chars"]].nunique()
assert (by_budget == 1).all().all() and (runs["chars"] / runs["steps"]).nunique() == 1, by_budget  # one B × T
assert runs.sort_values("steps")["chars"].is_monotonic_increasing
trained = done[done["experiment"] != "07_lr_sweep"]
assert all(math.isclose(lr, chosen[m]) for m, lr in zip(trained["model"], trained["lr"]) if m in chosen), trained
assert ((done["chars"] / done["chars_per_s"] - done["train_s"]).abs() <= 1e-9 * done["train_s"] + 1e-9).all()
print(f"{len(done)} finished runs in {done['experiment'].nunique()} experiments, {len(table) - len(done)} diverged")

# %%
finished = set(zip(done["experiment"], done["config"], done["seed"]))  # a diverged run has no context measure
for res in measured:
    for run in (r for c in res.configs for r in res.run_dirs(c) if (res.exp_dir.name, c, int(r.name[4:])) in finished):
        b = nl.results.read_json(run / "bpc_by_context_test.json")
        weighted = sum(n * v for n, v in zip(b["count"], b["bpc"]) if n) / sum(b["count"])
        assert math.isclose(weighted, b["bpc_mean"], rel_tol=1e-9), (run, weighted, b["bpc_mean"])
print(f"{context.groupby(['config', 'seed']).ngroups} finished runs measured by context, each equal to its bins' weighted mean")

# %% [markdown]
# ## Takeaways
# From the committed full results (the sweep: one seed per rate; the rest: 3 seeds per
# configuration, the same seeds and data order for every model, so differences are paired by
# seed). A difference is called separated only when its paired 95 % t interval excludes zero.
# Seconds price each run at its model's step time measured alone on one GPU (the runs themselves
# shared the GPU, six or more side by side). The last bullet names what has not been run yet.

# %%
nl.notebook.takeaways(ctx, nl.notebook.scaling_takeaways(ctx))  # from the committed results, whatever the view

# %% [markdown]
# ## Exercises
# 1. *Predict, then check:* the Transformer's curve in the long-context figure flattens at the
#    dotted line. What would it do if `bpc_by_context` read each article in windows of $2T$?
#
# <details><summary>Solution</summary>
#
# The Transformer carries no state between windows: a prediction at offset $p$ of its article
# sees only the characters since its window started, between 0 and $T - 1$ of them. Every bin
# beyond $T$ averages over all window positions alike, hence level. Read in windows of $2T$ the
# bins up to $2T$ would keep falling, but at positions the model never trained at: rotary
# positions past $T$ are extrapolation, so the loss there may rise instead. The recurrent and
# memory models do not depend on the reading window: their state carries the article.
# </details>
#
# 2. The rate is chosen on the validation split and the lesson reports test bpc. What goes
#    wrong if the rate is chosen by the test bpc of the sweep?
#
# <details><summary>Solution</summary>
#
# The choice then fits the test split: of five rates, one is lowest on test partly by chance,
# and reporting the test bpc of that same choice overstates how good the tuned model is. With
# one seed per rate the chance part is large. Choosing on valid and reporting test keeps the
# reported number out of the choice.
# </details>
#
# 3. In the equal-compute figure, one model's points lie to the right of another's at every
#    budget. With the table of `compute_matched`, say when that model is worth its time.
#
# <details><summary>Solution</summary>
#
# It is worth its time when, at equal seconds, its bpc is lower: when `minus_reference` is
# positive for every other model (HOPE as the reference), or, in the figure, when its line lies
# below the others' where the seconds overlap. Lower bpc at equal characters is not enough: the
# others could spend the same seconds on more characters. With six runs sharing a GPU the
# seconds carry the sharing too; compare with the step times of one model alone
# (`results/bench/models_06.json`) before concluding on speed.
# </details>
