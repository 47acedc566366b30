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
# 1. the update schedule of the `seed` preset, and a schedule explorer (chunks and steps → ticks and counts);
# 2. Eq. 31 by hand: one chunk update computed in plain torch, checked against `nlcore.cms.CMS`;
# 3. the configurations of the experiment, generated from the registry;
# 4. validation bits per character per configuration, ranked, with 95 % Student-t intervals over seeds;
# 5. paired differences seed by seed: which lever moves held-out bpc beyond the seed noise;
# 6. effective learning per level: how far each level's parameters actually move;
# 7. checks, takeaways with their intervals, and exercises (one of them trains a new configuration).
#
# | view | what runs | runtime |
# |---|---|---|
# | committed (default) | nothing trains: re-plots the committed full results (8 configurations × 3 seeds) | seconds on any CPU |
# | smoke | every configuration × 1 seed, smoke preset, synthetic corpus, CPU, plus the exercise's run | under a minute on 2 CPU cores |
# | full | every configuration × 3 seeds, `seed` preset, WikiText-2 | GPU: see `docs/reproduce.md` |
#
# Modules: `nlcore.cms` (the schedule and the per-level update), `nlcore.experiments` (the grid),
# `nlcore.stats` (Student-t intervals), `nlcore.report.figures`, `nlcore.report.notebook` (setup,
# quoted numbers), `nlcore.report.widgets`.

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
# chunks and steps of this view's preset (committed and full: the `seed` preset; smoke: the smoke preset).

# %%
levels = {lv.name: lv.chunk for lv in ctx.config.cms.levels}
fig = nl.figures.cms_timeline(levels, steps=ctx.config.steps, partial=ctx.config.cms.partial)
ctx.show(fig, "update_timeline")

# %% [markdown]
# **Schedule explorer.** Change the medium and slow chunks, the number of steps and what happens
# to a final partial chunk (in JupyterLab with a kernel; a rendered copy shows the default state).
# Watch the right panel: the slow level's update count falls as $1/C$, and once $C$ exceeds the
# number of steps only the flush is left.

# %%
nl.widgets.explore(
    lambda medium, slow, steps, partial: nl.figures.cms_timeline(
        {"fast": 1, "medium": medium, "slow": slow}, steps=steps, partial=partial),
    medium=nl.widgets.slider(4, 1, 64, description="medium C"),
    slow=nl.widgets.slider(16, 1, 256, description="slow C"),
    steps=nl.widgets.slider(64, 8, 512, description="steps"),
    partial=nl.widgets.choice(["flush", "discard"], description="partial chunk"))

# %% [markdown]
# ## Eq. 31 by hand
# One chunk of a slow level with $C = 4$, on a tiny layer: every gradient of the chunk is taken at
# the **chunk-start** parameters (nothing changes them inside the chunk), the four gradients are
# summed, and one SGD step is applied at step 4. Below, the same four steps through
# `nlcore.cms.CMS` as the trainer calls it (`loss.backward()`, then `cms.after_backward(step)`):
# the layer must stay frozen for steps 1–3 and land on the hand-computed parameters at step 4.

# %%
import torch

lin = torch.nn.Linear(3, 2)  # a tiny level: W (2, 3) and b (2,)
xs, ys = torch.randn(4, 5, 3), torch.randn(4, 5, 2)  # one chunk of C = 4 steps, 5 examples per step
def loss(W, b, x, y): return ((torch.tanh(x @ W.T + b) - y) ** 2).mean()
theta0 = [p.detach().clone().requires_grad_() for p in lin.parameters()]  # chunk-start parameters
grads = [torch.autograd.grad(loss(*theta0, x, y), theta0) for x, y in zip(xs, ys)]  # each at theta0
by_hand = [p - 0.1 * sum(g[k] for g in grads) for k, p in enumerate(theta0)]  # one SGD step on the sum
cfg = nl.CMSConfig(levels=(nl.LevelConfig("slow", chunk=4, optimizer="sgd", lr=0.1),), grad_clip=0.0)
cms = nl.CMS(cfg, {"slow": list(lin.named_parameters())})
for i, (x, y) in enumerate(zip(xs, ys), start=1):  # the trainer's loop: backward, then the schedule
    loss(lin.weight, lin.bias, x, y).backward()
    updated = cms.after_backward(i)
    assert updated == (["slow"] if i == 4 else []) and (i == 4 or torch.equal(lin.weight, theta0[0]))
assert all(torch.allclose(p, q) for p, q in zip(lin.parameters(), by_hand))
print("one chunk by hand == nlcore.cms.CMS: frozen for steps 1-3, one summed SGD step at step 4")

# %% [markdown]
# ## The experiment
# The configurations registered in `nl.EXPERIMENTS["01_cms"]`, resolved from the registry for the
# full runs (effective learning rates after the lr policy; `overrides` are the levers each
# configuration sets). The `seed` preset initialises the FFN levels' output layers randomly; every
# configuration except `default` and `no_norm_residual` pins them to zero, the initialisation its
# committed runs used (`results/01_cms/NOTE.md`). So `zero_init_ffn` is `default` with zero
# initialisation, and it is the clean baseline for the CMS levers: each of `all_adamw`,
# `adam_lr_div_chunk`, `chunks_1_4_16`, `chunks_1_2_4` and `cms_off` differs from it in one lever.

# %%
nl.figures.config_table("01_cms", "full")

# %% [markdown]
# In the smoke view the preset's chunks are 4 and 16, so `default` and `chunks_1_4_16` differ only
# in the FFN initialisation there. Now the results: read back from `results/01_cms/` (committed view)
# or trained now (smoke, full).

# %%
exp = nl.notebook.experiment(ctx)
unigram = nl.notebook.unigram_reference(exp)  # the corpus' unigram model: the level to beat

# %% [markdown]
# ## Which configuration predicts held-out text best?
# Each point is the mean over seeds of the validation bits per character; the whiskers are the
# 95 % Student-t interval of that mean (none with a single seed). The unigram model (character
# frequencies alone) is named in the legend: every configuration sits far below it. Overlapping
# intervals do not settle a comparison; the paired differences below are the sharper test.

# %%
fig = nl.figures.ci_bars(exp.summary, "valid_bpc", reference=unigram, reference_label="unigram model")
ranked = sorted(exp.configs, key=lambda c: exp.value(c, "valid_bpc"))
fig.suptitle(f"{ranked[0]} has the lowest validation bpc, {ranked[-1]} the highest "
             f"(mean and 95 % t interval over seeds)", fontsize=11)
ctx.show(fig, "ci_valid_bpc")

# %% [markdown]
# ## Paired differences, seed by seed
# Configurations share seeds, so each seed's initialisation and data order are the same across
# them; subtracting seed by seed removes that shared noise. Top panel: against `default` (the two
# configurations that keep its other settings). Bottom panel: each CMS lever against
# `zero_init_ffn`, the configuration it differs from in that lever alone. Green: the interval is
# below zero (better); red: above zero (worse); blue: it contains zero (not separated). The grey
# band is the baseline's own unpaired interval half-width, for scale.

# %%
levers = ["all_adamw", "adam_lr_div_chunk", "chunks_1_4_16", "chunks_1_2_4", "cms_off"]
baselines = {"zero_init_ffn": "default", "no_norm_residual": "default", **dict.fromkeys(levers, "zero_init_ffn")}
diffs = nl.notebook.paired_differences(exp.runs, baselines)
fig = nl.figures.paired_diff_bars(diffs, "valid_bpc")
fig.suptitle("Paired differences in validation bpc (95 % t interval over seeds)\n"
             + nl.figures.paired_finding(diffs), fontsize=10)
ctx.show(fig, "paired_valid_bpc")

# %% [markdown]
# ## Effective learning per level
# From one run's telemetry (`metrics.jsonl`, seed 0): the cumulative norm of each level's parameter
# changes, $\sum_k \lVert \Delta\theta^{(\ell)}_k \rVert$, against the step (log scale). A level
# whose curve sits decades below the others barely moves. `all_adamw` and `adam_lr_div_chunk`
# differ only in the lr/C policy; `default` is the SGD step on the summed gradient.

# %%
trio = [c for c in ("default", "all_adamw", "adam_lr_div_chunk") if c in exp.configs]
fig = nl.figures.effective_learning({c: exp.run_dirs(c)[0] for c in trio})
moved = {c: nl.figures.cumulative_change(exp.run_dirs(c)[0]).groupby("level")["change"].last() for c in trio}
fig.suptitle(f"Under lr/C the slow level moves {moved['all_adamw']['slow'] / moved['adam_lr_div_chunk']['slow']:.0f}x "
             f"less than under AdamW at the same base lr (seed 0, cumulative ‖Δθ‖)", fontsize=11)
ctx.show(fig, "effective_learning")

# %% [markdown]
# ## Results table
# Mean ± half-width of the 95 % Student-t interval [low, high] over n seeds. The same numbers are
# in the experiment's `summary.json`; the README's tables are generated from it.

# %%
nl.figures.summary_table(exp.summary, ("valid_bpc", "test_bpc"), order=exp.configs, failed=exp.failed)

# %% [markdown]
# ## Checks
# These hold in every view: every number is finite, every configuration beats the unigram level,
# and every level updated exactly as often as Eq. 31 says.

# %%
valid = {c: exp.value(c, "valid_bpc") for c in exp.configs}
assert nl.notebook.all_finite(exp), "a NaN or inf in runs.csv or in a training loss"
assert all(v < unigram for v in valid.values()), f"not below the unigram level {unigram:.3f}: {valid}"
updates = nl.notebook.updates_check(exp)
assert updates["ok"].all(), f"update counts differ from floor(steps/C) (+1 flushed):\n{updates[~updates['ok']]}"
assert set(exp.configs) == set(nl.EXPERIMENTS["01_cms"].labels), f"missing configurations; failed: {exp.failed}"
updates.drop_duplicates(["config", "level"]).pivot(index="config", columns="level", values="updates")

# %% [markdown]
# ## Takeaways
# Quoted from the committed full results (`results/01_cms/summary.json` and, for paired
# differences, `runs.csv`), whatever the view.

# %%
q = nl.notebook.Quote(ctx, "01_cms")
nl.notebook.takeaways(ctx, f"""
- **CMS off is best at this budget.** With every level stepping every window, validation bpc is
  {q.ci("cms_off")} against the default's {q.ci("default")}. Seed by seed, CMS off − default =
  {q.diff("cms_off", "default")}, and against `zero_init_ffn`, which shares its initialisation,
  {q.diff("cms_off", "zero_init_ffn")}: both intervals clear zero. Slow levels cost held-out bits here.
- **The prototype's lr/C is the worst CMS policy.** AdamW with lr/C on the slow levels scores
  {q.ci("adam_lr_div_chunk")}; minus default {q.diff("adam_lr_div_chunk", "default")}, and minus
  `all_adamw`, which differs from it only in lr/C, {q.diff("adam_lr_div_chunk", "all_adamw")}: separated.
  Its slow level barely moves (effective-learning figure).
- **The summed-gradient SGD step edges out AdamW, by little.** `all_adamw` − `zero_init_ffn` =
  {q.diff("all_adamw", "zero_init_ffn")}: separated, and small next to the levers above.
""")

# %%
nl.notebook.takeaways(ctx, f"""
- **Not separated** (the paired interval contains zero): shorter chunks 1/4/16 against the default,
  {q.diff("chunks_1_4_16", "default")}; the zero initialisation against the default's random one,
  {q.diff("zero_init_ffn", "default")}; and chunks 1/2/4 against `zero_init_ffn`, the configuration
  they differ from in chunks alone, {q.diff("chunks_1_2_4", "zero_init_ffn")}. Against the default,
  chunks 1/2/4 look better ({q.diff("chunks_1_2_4", "default")}), but that comparison also changes
  the initialisation.
- **LayerNorm + residual matter most**: without them, {q.ci("no_norm_residual")}; minus default
  {q.diff("no_norm_residual", "default")}.
- The schedule is exact: every level of every run made $\\lfloor \\text{{steps}}/C \\rfloor$ updates
  (+1 for a flushed partial chunk), checked above.
""")

# %% [markdown]
# ## Exercises
# 1. **Predict, then check.** In the schedule explorer, find chunks for which the slow level updates
#    only through the final flush. What happens to that level with `partial = discard`?
#    <details><summary>Solution</summary>
#    Any slow $C$ larger than the number of steps (e.g. $C = 128$ with 64 steps): no multiple of $C$
#    is reached, so the only update is the flush at the last step, on the sum of every gradient of
#    the run. With `discard` the accumulated gradients are dropped and the level never changes: it
#    stays at its initialisation. The `seed` preset's slow level (chunk 256, 2000 steps) makes 7
#    regular updates and a flushed eighth, as the first figure shows.
#    </details>
# 2. **The lr scaling question.** Under plain SGD, how should the learning rate of a level with
#    chunk $C$ scale, with `aggregation = sum` and with `mean`, so that (a) its one update is as
#    large as one fast step, or (b) over a chunk it moves as far as the fast level does in $C$ steps?
#    What changes under Adam?
#    <details><summary>Solution</summary>
#    SGD is linear in the gradient, and `sum` is $C$ times `mean`. (a) `sum` needs lr/C, `mean`
#    keeps lr: `sum` + lr/C equals `mean` + lr, the docstring of `nlcore.cms`. (b) `sum` keeps lr
#    (one step on $C$ gradients, all taken at the chunk-start parameters), `mean` needs $C$·lr.
#    Under Adam the update is invariant to the gradient's scale, so `sum` and `mean` give the same
#    step, about lr per coordinate, once every $C$ steps: the level already moves about $C$ times
#    less than the fast one, and dividing lr by $C$ as well makes that $C^2$, which is what froze the
#    prototype's slow levels.
#    </details>
# 3. **Run one more configuration.** Predict where AdamW with lr/√C on the medium and slow levels
#    lands between `all_adamw` (lr) and `adam_lr_div_chunk` (lr/C). The cell below trains it (seed 0)
#    when the view trains: set `VIEW = "smoke"` (a few seconds on a CPU) or `"full"` (a GPU).
#    <details><summary>Solution</summary>
#    Under Adam each update moves a level by about its lr, so against `all_adamw` the medium and
#    slow levels move √C times less instead of C times less under lr/C: expect a score between the
#    two. In smoke the corpus is synthetic and one seed decides nothing: compare the three
#    numbers printed, then check the full results if you have a GPU.
#    </details>

# %%
if ctx.trains:
    lr = ctx.config.cms.levels[0].lr  # the fast level's AdamW lr, as in all_adamw
    sets = [f"cms.levels.{lv.name}.{k}={v}" for lv in ctx.config.cms.levels[1:]
            for k, v in (("optimizer", "adamw"), ("lr", lr / lv.chunk ** 0.5))]
    run = nl.train(nl.apply_overrides(ctx.config, [*sets, "model.zero_init_ffn_out=true", "seed=0"]), progress=False)
    seed0 = exp.runs.query("seed == 0 and metric == 'valid_bpc'").set_index("config")["value"]
    print(f"seed 0, validation bpc: AdamW lr/sqrt(C) {run['valid_bpc']:.3f} | all_adamw {seed0['all_adamw']:.3f} "
          f"| adam_lr_div_chunk {seed0['adam_lr_div_chunk']:.3f}")
else:
    print("VIEW = 'committed' trains nothing: set VIEW = 'smoke' to train this configuration here")
