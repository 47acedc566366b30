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
# # 01 · Continuum Memory System
# > What does updating levels at different frequencies do to a character language model, and which optimizer policy makes the slow levels learn?
#
# A continuum memory system (CMS) splits the model's parameters into levels. The fast level
# updates every step; a level with chunk size $C_\ell$ keeps its parameters frozen inside a chunk
# and applies the chunk's accumulated gradients once, at steps $C_\ell, 2C_\ell, \dots$
# (Nested Learning, Sec. 3, Eq. 31):
#
# $$
# \theta^{(\ell)}_{i+1} =
# \begin{cases}
# \theta^{(\ell)}_i - \mathrm{Opt}_\ell\Big(\sum_{t=i-C_\ell+1}^{i} \nabla_\theta L\big(\theta^{(\ell)}_{i-C_\ell+1}; x_t\big)\Big) & \text{if } i \equiv 0 \pmod{C_\ell},\\
# \theta^{(\ell)}_i & \text{otherwise.}
# \end{cases}
# $$
#
# With a scale-invariant optimizer (Adam, AdamW) the sum and the mean give the same step, so the
# prototype's extra "divide the learning rate by $C$" made a slow level learn about $C^2$ times
# less than the fast one. This notebook measures what each policy does.
#
# **What you'll see**
# 1. the update schedule: which steps each level updates at (with sliders to change the chunks);
# 2. validation bits per character per configuration, ranked, with 95 % bootstrap CIs;
# 3. training curves, mean across seeds with a band;
# 4. effective learning per level: the cumulative size of each level's parameter changes;
# 5. a results table, and checks that hold in both modes.
#
# | mode | what runs | runtime |
# |---|---|---|
# | smoke (default) | every registered configuration × 1 seed, smoke preset, synthetic corpus, CPU | ~30 s on 2 CPU cores |
# | full | every registered configuration × 3 seeds, `seed` preset, WikiText-2 | GPU, see the README |
#
# Modules: `nlcore.cms` (the schedule), `nlcore.experiments` (the grid), `nlcore.report.figures`,
# `nlcore.results`, `nlcore.stats` (bootstrap CIs), `nlcore.report.notebook` (setup).

# %% tags=["parameters"]
VIEW = "committed"  # committed: re-plot the committed results (CPU, seconds) | smoke: run small on a CPU | full: train on a GPU
SEED = 0  # seeds the notebook; each run seeds itself from its configuration
DEVICE = "auto"  # "auto" | "cpu" | "cuda"

# %%
import nlcore as nl

ctx = nl.notebook.setup("01_cms", view=VIEW, seed=SEED, device=DEVICE)

# %% [markdown]
# ## The update schedule
# Each tick is one update of a level, drawn from `nlcore.cms.CMS.due(step)`, the same function
# the trainer calls. A level with chunk $C$ updates $\lfloor \text{steps}/C \rfloor$ times, plus
# once more at the end if a partial chunk is left over and flushed (the open circle). Shown: the
# chunks and steps of this mode's preset (smoke: 1/4/16 over 60 steps; full: 1/16/256 over 2000).

# %%
levels = {lv.name: lv.chunk for lv in ctx.config.cms.levels}
fig = nl.figures.cms_timeline(levels, steps=ctx.config.steps, partial=ctx.config.cms.partial)
ctx.show(fig, "update_timeline")

# %% [markdown]
# Move the sliders to change the chunk sizes (in a live kernel; an executed notebook shows the
# default values only).

# %%
nl.figures.cms_timeline_widget(steps=64, fast=1, medium=4, slow=16)

# %% [markdown]
# ## The experiment
# The configurations of `nlcore.experiments.EXPERIMENTS["01_cms"]`, all the same model:
#
# | configuration | fast level | medium and slow levels |
# |---|---|---|
# | `default` | AdamW | SGD with momentum on the chunk's **summed** gradient (Eq. 31 literally) |
# | `all_adamw` | AdamW | AdamW, learning rate unchanged |
# | `adam_lr_div_chunk` | AdamW | AdamW with the learning rate divided by $C$ (the prototype's policy) |
# | `chunks_1_4_16`, `chunks_1_2_4` | AdamW | as `default`, with shorter chunks |
# | `cms_off` | AdamW | AdamW, every chunk 1: an ordinary model, the baseline |
# | `ffn_random_init` | AdamW | as `default`, FFN output layers randomly initialised (not zero) |
# | `no_norm_residual` | AdamW | as `default`, without LayerNorm and residual around the FFN levels |
#
# In smoke mode the preset's chunks are already 1/4/16, so `default` and `chunks_1_4_16` coincide.

# %%
exp = nl.notebook.experiment(ctx)
exp.configs

# %% [markdown]
# ## Which configuration predicts held-out text best?
# Each point is the mean over seeds of the validation bits per character; the whiskers are the
# 95 % bootstrap interval of that mean (none with a single seed). The dashed line is the unigram
# model (character frequencies alone): any model that learned something sits left of it. Two
# configurations differ reliably only when their intervals do not overlap much; with 3 seeds the
# interval is narrow and under-covers, so read it as the spread of the seeds we ran.

# %%
unigram = nl.notebook.unigram_bpc(exp.run_dirs(exp.configs[0])[0])
fig = nl.figures.ci_bars(exp.summary, "valid_bpc", reference=unigram, reference_label="unigram model")
ctx.show(fig, "ci_valid_bpc")

# %% [markdown]
# ## Training curves
# Training bits per character, averaged over each logging interval, mean across seeds with the
# 95 % band. The gap between curves early on shows how much each policy slows the start.

# %%
fig = nl.figures.training_curves(exp.exp_dir, exp.configs, metric="train_bpc")
ctx.show(fig, "training_curves")

# %% [markdown]
# ## Effective learning per level
# From one run's telemetry (`metrics.jsonl`): the cumulative norm of each level's parameter
# changes, $\sum_k \lVert \Delta\theta^{(\ell)}_k \rVert$, against the step (log scale). A level
# whose curve sits decades below the others barely moves: it is frozen in all but name.
# Compare the default policy with the prototype's lr/C.

# %%
pair = [c for c in ("default", "adam_lr_div_chunk") if c in exp.configs]
fig = nl.figures.effective_learning({c: exp.run_dirs(c)[0] for c in pair})
ctx.show(fig, "effective_learning")

# %% [markdown]
# ## Results table
# Mean ± half-width of the 95 % bootstrap interval [low, high] over n seeds. The same numbers
# are in the experiment's `summary.json`; the README's table is generated from it.

# %%
nl.figures.summary_table(exp.summary, ("valid_bpc", "test_bpc"), order=exp.configs, failed=exp.failed)

# %% [markdown]
# ## Performance
# Training throughput of the seed model on one H100 (committed measurement, `results/bench/`,
# made by `scripts/reproduce/bench_final.sh`; the step is a CUDA-graph replay of forward and backward,
# `cuda_graph="auto"`, with the parts around the recurrence compiled). The recurrence is sequential
# in the window, so throughput grows with the batch (more rows per time step) and barely with the
# window. The dashed line is the throughput the model's cuDNN LSTM alone would allow (its forward
# and backward at the same shape, `nlcore/bench/floor.py`): the gap is everything else in the step.
# Re-measure on your GPU with `python -m nlcore bench --scaling`.

# %%
scaling = nl.figures.bench_report("scaling")
fig = nl.figures.plot_scaling(scaling)
ctx.show(fig, "throughput_scaling")

# %% [markdown]
# ## Checks
# These hold in both modes: every number is finite, every configuration beats the unigram level,
# and every level updated exactly as often as Eq. 31 says.

# %%
valid = {c: exp.value(c, "valid_bpc") for c in exp.configs}
assert nl.notebook.all_finite(exp), "a NaN or inf in runs.csv or in a training loss"
assert all(v < unigram for v in valid.values()), f"not below the unigram level {unigram:.3f}: {valid}"
updates = nl.notebook.updates_check(exp)
assert updates["ok"].all(), f"update counts differ from floor(steps/C) (+1 flushed):\n{updates[~updates['ok']]}"
assert {"default", "cms_off"} <= set(exp.configs), f"missing configurations; failed: {exp.failed}"
updates.drop_duplicates(["config", "level"]).pivot(index="config", columns="level", values="updates")

# %% [markdown]
# ## Takeaways
# - The schedule is exact: a level with chunk $C$ makes $\lfloor \text{steps}/C \rfloor$ updates
#   (+1 for a flushed partial chunk), checked above against every run.
# - Read the ranked figure from the top: the best configuration first; overlapping intervals mean
#   the seeds cannot separate those configurations.
# - In the effective-learning figure, a slow level whose cumulative change stays decades below
#   the fast level's is not learning; compare the two panels to see what lr/C does under Adam.
# - Smoke numbers only show that the pipeline runs; the conclusions come from the FULL results
#   (`REUSE_RESULTS=True` re-plots them).
#
# ## Exercises
# 1. With the sliders, find chunk sizes for which the slow level updates only through the final
#    flush. What does `cms.partial="discard"` do to those levels?
# 2. Under SGD, how should the learning rate of a level with chunk $C$ scale for `sum` and for
#    `mean` aggregation so that its per-character step matches the fast level? Check your answer
#    against the docstring of `nlcore.cms`.
# 3. Add a configuration to `EXPERIMENTS["01_cms"]` that uses AdamW with lr/√C on the slow levels,
#    run the notebook in smoke mode, and place it in the ranked figure.
