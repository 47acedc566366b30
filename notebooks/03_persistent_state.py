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
# # 03 · Persistent state
# > Does carrying the LSTM state across training windows help, where in the window does it help, and how do document resets and the prototype's own settings change the headline table?
#
# The model reads the training text as $B$ contiguous rows, one window of $T$ characters per
# step (truncated backpropagation through time, TBPTT). Gradients stop at the window boundary,
# but the recurrent state need not:
#
# ```
# row b:  ... | window k-1          | window k            | window k+1          | ...
#               h ────────────────────▶ h ───────────────────▶ h                  carried (detached)
# reset_every_batch:           h = 0 │            h = 0 │            h = 0 │    every window starts blind
# gradient:     ◀── backprop ──│      ◀── backprop ──│      ◀── backprop ──│    never crosses a boundary
# ```
#
# With the state carried (`state.reset=never`), the first characters of a window are predicted
# with the context of everything before them; with `reset_every_batch` they are predicted from
# nothing. `doc` resets the state where a new document starts, so no context leaks across
# articles. Evaluation streams the held-out split with the same policy, so
# $\text{bpc} = \frac{1}{N \ln 2}\sum_t -\ln p(c_{t+1}\mid c_{\le t})$ counts every character once.
#
# **What you'll see**
# 1. the headline table: validation and test bits per character (mean ± 95 % CI) beside the
#    prototype's training "PPL", for this repository's settings and the prototype's;
# 2. the same validation numbers as a ranked figure;
# 3. bits per character against the position inside the window: where carried state helps;
# 4. training curves, and checks that hold in both modes.
#
# | mode | what runs | runtime |
# |---|---|---|
# | smoke (default) | every registered configuration × 1 seed, smoke preset, synthetic corpus, CPU | ~35 s on 2 CPU cores |
# | full | every registered configuration × 3 seeds, `seed` preset, WikiText-2 | GPU, see the README |
#
# Modules: `nlcore.state` (carry and reset), `nlcore.training.evaluate` (streaming bpc, per position),
# `nlcore.experiments`, `nlcore.report.figures`, `nlcore.results`, `nlcore.report.notebook`.

# %% tags=["parameters"]
VIEW = "committed"  # committed: re-plot the committed results (CPU, seconds) | smoke: run small on a CPU | full: train on a GPU
SEED = 0  # seeds the notebook; each run seeds itself from its configuration
DEVICE = "auto"  # "auto" | "cpu" | "cuda"

# %%
import nlcore as nl

ctx = nl.notebook.setup("03_persistent_state", view=VIEW, seed=SEED, device=DEVICE)

# %% [markdown]
# ## The experiment
# The prototype's headline table had these rows; each is run twice, with this repository's
# settings and with the prototype's own (`prototype_` prefix: Adam with lr/C per level, no
# normalisation or residual, an untrained embedding and output head, no schedule, no clipping).
#
# | row | state policy |
# |---|---|
# | `reset_every_batch` | zero the state before every window |
# | `persistent` | carry it across windows, forever |
# | `persistent_surprise` | carried, plus the surprise objective (`nlcore.surprise`) |
# | `persistent_512` | carried, windows of 512 characters (smoke: 64) |
# | `persistent_doc_resets` | carried, reset where a document starts |
# | `persistent_hierarchical` | carried, plus slow-level summaries carried (`model.hierarchical_state`) |

# %%
exp = nl.notebook.experiment(ctx)
exp.configs

# %% [markdown]
# ## The headline table
# Held-out bits per character (lower is better), mean ± half-width of the 95 % bootstrap interval
# [low, high] over n seeds. The last column is the number the prototype reported: the exponential
# of the mean training loss over the last 100 steps, a *training* perplexity per character. It is
# not held-out, and $\log_2$ of it is a training bpc, so it cannot be compared with the first two.

# %%
nl.figures.summary_table(exp.summary, ("valid_bpc", "test_bpc", "train_ppl_last100"), order=exp.configs,
                         failed=exp.failed)

# %% [markdown]
# The same validation numbers, ranked within each group: this repository's settings on top, the
# prototype's below, each panel with its own axis. The unigram model (character frequencies
# alone) is drawn as a dashed line where it fits the axis, otherwise named with its value: a row
# worse than it has learned less than the character frequencies.

# %%
unigram = nl.notebook.unigram_bpc(exp.run_dirs(exp.configs[0])[0])
fig = nl.figures.ci_bars(exp.summary, "valid_bpc", reference=unigram, reference_label="unigram model",
                         group_prefix=("prototype_", "the prototype's settings"))
ctx.show(fig, "ci_valid_bpc")

# %% [markdown]
# ## Where in the window does carried state help?
# Validation bits per character at each position inside the window (log scale), from the final
# evaluation of each run. A model whose state is reset has no context at position 1, so its
# first positions should cost more bits; with the state carried the curve should be flat. The
# gap at the left edge is what carrying the state buys; further right both see the same context.

# %%
rows = [c for c in ("reset_every_batch", "persistent", "persistent_doc_resets") if c in exp.configs]
fig = nl.figures.bpc_by_position(exp.exp_dir, rows)
ctx.show(fig, "bpc_by_position")

# %% [markdown]
# ## Training curves
# Training bits per character, mean across seeds with the 95 % band, for the rows with this
# repository's settings. The x axis counts steps, and `persistent_512` reads twice as many
# characters per step as the others (windows of 512 against 256; in smoke, 64 against 32), so
# compare it with the others on the held-out numbers above, not here.

# %%
ours = [c for c in exp.configs if not c.startswith("prototype_")]
fig = nl.figures.training_curves(exp.exp_dir, ours, metric="train_bpc")
ctx.show(fig, "training_curves")

# %% [markdown]
# ## Checks
# These hold in both modes: every number is finite, the carried and reset rows both ran, every
# row with this repository's settings beats the unigram level, and every level updated as often
# as its chunk says (a frozen level never).

# %%
assert nl.notebook.all_finite(exp), "a NaN or inf in runs.csv or in a training loss"
assert {"reset_every_batch", "persistent"} <= set(exp.configs), f"missing rows; failed: {exp.failed}"
valid = {c: exp.value(c, "valid_bpc") for c in ours}
assert all(v < unigram for v in valid.values()), f"not below the unigram level {unigram:.3f}: {valid}"
updates = nl.notebook.updates_check(exp)
assert updates["ok"].all(), f"update counts differ from floor(steps/C) (+1 flushed):\n{updates[~updates['ok']]}"
exp.failed

# %% [markdown]
# ## Takeaways
# - The headline table puts held-out bits per character beside the prototype's training
#   perplexity; only the first two columns measure prediction of unseen text.
# - In the position figure, the difference between the reset and carried curves at the first
#   positions is the value of carried state; where the curves meet, the window alone suffices.
# - Compare each row with its `prototype_` twin to see how much of a difference comes from the
#   state policy and how much from the prototype's other settings.
# - Smoke numbers only show that the pipeline runs; the conclusions come from the FULL results
#   (`REUSE_RESULTS=True` re-plots them).
#
# ## Exercises
# 1. Predict the position curve of `persistent_512`: where should it differ from `persistent`,
#    and why? Add it to the position figure and check.
# 2. `state.reset=every_n` with `state.reset_every=N` zeroes the state every N windows. Which N
#    makes it indistinguishable from `persistent` on the position figure?
# 3. Convert the prototype's reported training PPL to bits per character and place it on the ranked
#    figure. Why is it lower than every held-out number?
