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
# # 04 · The delta rule
# > When does writing to a linear memory with the delta rule beat a Hebbian write or a plain gradient step, and does the delta rule help as the optimizer of a language model's slow levels?
#
# A linear memory $M$ (d_out × d_in) stores a value $v$ under a key $k$. Nested Learning (§2.3,
# Eqs. 27–29) contrasts the dot-product objective (a Hebbian write) with the L2 regression
# $\tfrac12\lVert Mk - v\rVert^2$. Its exact proximal step, solved in closed form
# (Sherman–Morrison, no inverse), is the **delta rule**:
#
# $$
# M_{t+1} = \arg\min_M \tfrac12\lVert M k - v\rVert^2 + \tfrac{1}{2\eta}\lVert M - M_t\rVert^2
#         = M_t - \frac{\eta}{1+\eta\lVert k\rVert^2}\,(M_t k - v)\,k^\top .
# $$
#
# | rule | update | note |
# |---|---|---|
# | Hebbian | $M + \eta\, v k^\top$ | never erases: old content along $k$ stays |
# | GD / LMS | $M - \eta\,(M k - v)\,k^\top$ | diverges when $\eta\lVert k\rVert^2 > 2$ |
# | delta, exact | $M - \frac{\eta}{1+\eta\lVert k\rVert^2}(M k - v)\,k^\top$ | bounded for any $\eta$ and any $\lVert k\rVert$ |
# | delta, normalised | $M - \eta'(M\hat k - v)\,\hat k^\top$, $\ \hat k = k/\lVert k\rVert$, $\eta' = \frac{\eta}{1+\eta}$ | the practical form (Eq. 29) |
#
# With unit-norm keys the exact and the normalised rule coincide, and both are **one gradient
# step on $\tfrac12\lVert Mk - v\rVert^2$ at step $\eta'$**: the delta rule's gain is its
# step-size normalisation. $\eta \to \infty$ ($\eta' = 1$) overwrites exactly: $M_{t+1}k = v$.
#
# **What you'll see**
# 1. the delta rule computed by hand, equal to a gradient step and to `nlcore.delta`;
# 2. a recall benchmark computed live: recall error against load, and sliders for $d$, $\eta$ and the load;
# 3. the committed full benchmark ($d$ = 64 and 256; unit-norm and spread key norms; $\eta$ = 1 and $10^6$);
# 4. the delta rule as the optimizer of the FFN levels of the language model: bits per character
#    with 95 % t intervals, paired differences against the default, paired training curves;
# 5. checks, takeaways quoted from `results/04_delta_rule/`, exercises.
#
# | view | what runs | runtime (2 CPU cores) |
# |---|---|---|
# | committed (default) | live recall demo ($d$ = 32); re-plots the committed `results/04_delta_rule/` | seconds on any CPU |
# | smoke | live recall demo + 5 configurations (and the exercise's sixth) × 1 seed, smoke preset, synthetic corpus, CPU | under a minute on 2 CPU cores |
# | full | live recall demo + 5 configurations × 3 seeds, `seed` preset, WikiText-2 | GPU, see the README |
#
# Modules: `nlcore.delta` (the rules), `nlcore.experiments.recall` (the benchmark), `nlcore.optim.delta_rule`
# (the rule as an optimizer), `nlcore.experiments`, `nlcore.report.figures`, `nlcore.stats`, `nlcore.report.notebook`.

# %% tags=["parameters"]
VIEW = "committed"  # committed: re-plot the committed results (CPU, seconds) | smoke: run small on a CPU | full: train on a GPU
SEED = 0  # seeds the notebook; each run seeds itself from its configuration
DEVICE = "auto"  # "auto" | "cpu" | "cuda"

# %%
import pandas as pd
import torch

import nlcore as nl

ctx = nl.notebook.setup("04_delta_rule", view=VIEW, seed=SEED, device=DEVICE)

# %% [markdown]
# ## The delta rule by hand
# One write of $v$ under a unit-norm key $k$ into a small memory $M$: the delta rule's update
# $M - \eta'(Mk - v)k^\top$ typed out, the same step taken by autograd on $\tfrac12\lVert Mk - v\rVert^2$,
# and `nlcore.delta`'s two forms (the normalised rule takes the gradient $\nabla_y L = -v$ as its
# argument; the exact proximal rule takes the target $v$). All four agree.

# %%
M = torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(3, 4)  # memory (d_out 3, d_in 4)
k = torch.tensor([1.0, 2.0, 2.0, 0.0], dtype=torch.float64) / 3  # a unit-norm key
v = torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)  # the value to store under k
eta = 1.0
step = eta / (1 + eta)  # η′ = η / (1 + η)
by_hand = M - step * torch.outer(M @ k - v, k)  # M − η′ (M k − v) kᵀ
Mg = M.clone().requires_grad_(True)
(0.5 * (Mg @ k - v).pow(2).sum()).backward()  # ∇_M ½‖M k − v‖² = (M k − v) kᵀ
gd = M - step * Mg.grad  # one gradient step at step η′
lib = nl.delta.normalized_delta_step(M, k, -v, eta)  # nlcore: ∇_y L = −v
assert torch.allclose(by_hand, gd) and torch.allclose(by_hand, lib)
assert torch.allclose(nl.delta.proximal_l2_step(M, k, v, eta), lib)  # the exact form, unit key
err = lambda W: float((W @ k - v).norm() / v.norm())  # noqa: E731
assert err(nl.delta.normalized_delta_step(M, k, -v, float("inf"))) < 1e-12  # η′ = 1: float64 rounding only
print(f"recall error of v: {err(M):.3f} before, {err(by_hand):.3f} after one write at η′ = {step}; below 1e-12 at η′ = 1")

# %% [markdown]
# At $\eta' = \frac12$ the write halves the error along $k$; at $\eta' = 1$ it overwrites: the
# memory returns $v$ exactly for $k$. What it does to *other* keys is the question of the next
# section.
#
# ## Associative recall, live
# `nlcore.experiments.recall`: a stream of key→value writes into $M = 0$, keys **correlated** (half of each
# key's energy in a shared subspace of rank $d/8$) and 20 % of the writes **overwrites** of an
# earlier key with a fresh value. After the stream, the error of recalling the latest value of
# every stored key, $\lVert Mk - v\rVert^2/\lVert v\rVert^2$ (0: perfect, 1: as bad as $M = 0$),
# against the load $n/d$. Least squares on the final content is the offline optimum (0 up to
# load 1). Left: unit-norm keys; right: key norms spread by $e^{0.5\,z}$, $z \sim N(0,1)$. All
# rules at $\eta = 1$ (Hebbian: step 1). $d = 32$, 3 seeds, under a second in every view.

# %%
demo = pd.concat([nl.recall.run_recall_benchmark(d=32, seeds=(0, 1, 2), eta=1.0, key_norm_spread=s)
                  .assign(key_norm_spread=s) for s in (0.0, 0.5)], ignore_index=True)
fig = nl.figures.recall_curves(demo, cols=("key_norm_spread",))
fig.suptitle("Spread key norms make GD diverge and Hebbian errors explode; both delta rules stay near 1 or below\n"
             "(d = 32, η = 1, correlated keys with overwrites; mean and 95 % t band over seeds)", fontsize=11)
ctx.show(fig, "recall_demo")

# %% [markdown]
# The identity of the title cell, checked on the same streams: with unit-norm keys, GD at step
# $\eta' = \eta/(1+\eta) = 0.5$ writes the same memory as the normalised delta rule at $\eta = 1$.

# %%
gd_half = nl.recall.run_recall_benchmark(d=32, seeds=(0, 1, 2), eta=nl.delta.eta_prime(1.0), methods=("gd",))
unit = demo[demo["key_norm_spread"] == 0].pivot_table(index=["load", "seed"], columns="method", values="value")
same = (gd_half.set_index(["load", "seed"])["value"] - unit["delta_normalized"]).abs().max()
print(f"unit-norm keys: max |GD(step 0.5) - delta_normalized(eta 1)| = {same:.1e} over {len(unit)} (load, seed) cells")
print(f"unit-norm keys: max |delta_exact - delta_normalized| = {(unit['delta_exact'] - unit['delta_normalized']).abs().max():.1e}")

# %% [markdown]
# ### Capacity and interference, with sliders
# Move the dimension $d$, the step $\eta$ (GD's step and the delta rules' proximal $\eta$) and the
# load (stored keys per dimension); each change reruns the benchmark above (3 seeds, under a
# second on a CPU). Things to find: least squares is exact up to load 1 and no further (more keys
# than dimensions must interfere); GD is the best online write at small $\eta$ with unit-norm keys
# and blows up with spread norms once $\eta\lVert k\rVert^2 > 2$; the delta rules stay bounded at
# every $\eta$; Hebbian only gets worse as the load grows. (An executed copy shows the default
# state; open the notebook in JupyterLab with a kernel to move the sliders.)

# %%
nl.widgets.explore(
    nl.figures.recall_explorer,
    d=nl.widgets.slider(32, 8, 128, 8, "dimension d"),
    eta=nl.widgets.slider(1.0, 0.01, 100.0, 0.25, "step η", log=True),
    load=nl.widgets.slider(1.0, 0.125, 2.5, 0.125, "load n/d"),
    key_norm_spread=nl.widgets.choice({"unit-norm keys": 0.0, "spread key norms (0.5)": 0.5}, description="keys"),
)

# %% [markdown]
# ## The full recall benchmark (committed)
# `python -m nlcore recall --d 64 256 --eta 1.0 1e6 --key-norm-spread 0 0.5`, 3 seeds, read from
# `results/04_delta_rule/recall/` in every view. Rows: $d$; columns: key norms and $\eta$.
# $\eta = 10^6$ is an (almost) exact overwrite for the delta rules; GD at that step is not finite
# (drawn on the ceiling). Hebbian writes use step 1 throughout.

# %%
recall, _, recall_meta = nl.results.read_experiment(nl.paths.results_root("full") / "04_delta_rule" / "recall")
fig = nl.figures.recall_curves(recall, cols=("key_norm_spread", "eta"), rows=("d",))
fig.suptitle("At d = 64 and 256 as at d = 32: with spread key norms only the delta rules stay bounded at η = 1; "
             "exact overwrites (η = 10⁶) cost recall at high load\n(correlated keys with overwrites; "
             "mean and 95 % t band over seeds)", fontsize=11)
ctx.show(fig, "recall_full")
print(f"made by `{recall_meta['command']}` on {recall_meta['environment'].get('gpu_name') or recall_meta['device']}")

# %% [markdown]
# **Where the delta rule shines.** (1) Keys whose norms vary: GD's effective step
# $\eta\lVert k\rVert^2$ exceeds 2 for the long keys and the memory blows up, while the delta
# rule's $\eta/(1+\eta\lVert k\rVert^2)$ keeps every write a contraction toward the target. (2)
# Correlated keys with overwrites, against Hebbian: a Hebbian write only adds, so the old value
# of an overwritten key and the shared component of correlated keys pile up; the delta rule
# first removes what $M$ already returns for $k$. **Where it does not:** with unit-norm keys it
# *is* GD at step $\eta'$, so any advantage over GD there is only the choice of step (GD at
# step 1 is ahead at low load, behind at high load).
#
# ## The delta rule as an optimizer of the FFN levels
# `nlcore.optim.delta_rule.DeltaRule` applies the normalised rule per token to the Linear weights of
# a CMS level, with $k$ the layer input and the target $-\nabla_y \ell$, all tokens of a chunk
# evaluated at the frozen $M$ and averaged (Eq. 31; $\eta'$ is the step on the chunk's mean objective). The configurations of
# `EXPERIMENTS["04_delta_rule"]`, all with zero-initialised FFN outputs:
#
# | configuration | medium and slow (FFN) levels |
# |---|---|
# | `sgd_default` | SGD with momentum on the chunk's summed gradient (the baseline; = 01 `zero_init_ffn`) |
# | `adamw` | AdamW, lr 5e-3 (= 01 `all_adamw`) |
# | `delta` | delta rule, $\eta'$ = 0.5 |
# | `delta_lr0.1` | delta rule, $\eta'$ = 0.1 |
# | `delta_batch_mean` | the prototype's rule: one decay along the chunk's mean input (defective), 0.5 |

# %%
exp = nl.notebook.experiment(ctx)
exp.configs

# %% [markdown]
# Validation bits per character, mean and 95 % t interval over seeds; the dashed line is the
# unigram model (character frequencies alone).

# %%
unigram = nl.notebook.unigram_bpc(exp.run_dirs(exp.configs[0])[0])
fig = nl.figures.ci_bars(exp.summary, "valid_bpc", reference=unigram, reference_label="unigram model")
fig.suptitle("Every optimizer of the FFN levels lands far below the unigram level; the differences "
             "between them are small (next figure)", fontsize=11)
ctx.show(fig, "ci_valid_bpc")

# %% [markdown]
# ## Paired differences against `sgd_default`
# Same seeds and data order, so the per-seed difference removes the variation the runs share:
# mean and 95 % t interval of the difference; the grey band is ± the half-width of
# `sgd_default`'s own interval. Green: interval below 0, red: above 0, blue: holds 0.

# %%
diffs = nl.notebook.paired_differences(exp.runs, "sgd_default")
fig = nl.figures.paired_diff_bars(diffs, "valid_bpc")
fig.suptitle("All three delta variants end above sgd_default, their paired intervals clear of zero; "
             "AdamW only slightly above\n(mean and 95 % t interval of the per-seed difference)", fontsize=11)
ctx.show(fig, "paired_diff_valid_bpc")
diffs.assign(verdict=nl.notebook.separation(diffs)).round(4)

# %% [markdown]
# ## Paired training curves
# The same pairing along training: each configuration's training bits per character minus
# `sgd_default`'s on the same seed, averaged over 5 logged points, mean and 95 % t band over seeds.
# Raw curves would be dominated by the noise all runs share (which windows are hard); here it cancels.

# %%
fig = nl.figures.paired_curves(exp.exp_dir, exp.configs, "sgd_default", metric="train_bpc", smooth=5)
fig.suptitle("The delta optimizers are ahead of sgd_default early in training and fall behind after it;\n"
             "AdamW ends level with it (paired by seed: mean and 95 % t band; below zero is better)", fontsize=11)
ctx.show(fig, "paired_train_bpc")
nl.figures.summary_table(exp.summary, ("valid_bpc", "test_bpc"), order=exp.configs, failed=exp.failed)

# %% [markdown]
# ## Checks
# These hold in every view. Recall (live): exact and normalised delta rules agree with unit-norm
# keys, and both equal GD at step $\eta'$; least squares is exact below load 1; with spread key
# norms GD blows up while both delta rules stay below 1.5; the delta rule beats Hebbian at every
# load with unit-norm keys. Language model: every number finite, every configuration below the
# unigram level, every level updated as often as its chunk says.

# %%
assert same < 1e-5 and (unit["delta_exact"] - unit["delta_normalized"]).abs().max() < 1e-5
assert unit.query("load < 1")["lstsq"].max() < 1e-6, "least squares should be exact below load 1"
wide = demo[demo["key_norm_spread"] > 0].groupby(["method", "load"])["value"].mean().unstack("method")
assert not (wide["gd"] < 10).all(), "GD should diverge somewhere with spread key norms at eta 1"
assert wide[["delta_exact", "delta_normalized"]].max().max() < 1.5, wide
assert (unit["delta_exact"] < unit["hebbian"]).all(), "delta should beat Hebbian with unit-norm keys"
assert nl.notebook.all_finite(exp), "a NaN or inf in runs.csv or in a training loss"
valid = {c: exp.value(c, "valid_bpc") for c in exp.configs}
assert all(v < unigram for v in valid.values()), f"not below the unigram level {unigram:.3f}: {valid}"
updates = nl.notebook.updates_check(exp)
assert updates["ok"].all(), f"update counts differ from floor(steps/C) (+1 flushed):\n{updates[~updates['ok']]}"
assert {"sgd_default", "delta"} <= set(exp.configs), f"missing configurations; failed: {exp.failed}"

# %% [markdown]
# The claims of the takeaways, checked on the committed full results (whatever the view): every
# delta variant and AdamW is separated from `sgd_default` (higher); the three delta variants are
# not separated from each other; with spread key norms GD's error exceeds 1 in most cells while
# the delta rules stay below 1 at $\eta = 1$.

# %%
full = nl.notebook.committed_results("04_delta_rule")
fdiffs = nl.notebook.paired_differences(full.runs, "sgd_default").set_index("config")
assert (nl.notebook.separation(fdiffs) == "higher").all(), fdiffs
among = nl.notebook.paired_differences(full.runs, {"delta_lr0.1": "delta", "delta_batch_mean": "delta"})
assert (nl.notebook.separation(among) == "not separated").all(), among
w = recall.pivot_table(index=["d", "key_norm_spread", "eta", "load", "seed"], columns="config", values="value", dropna=False)
sp = w.query("key_norm_spread > 0 and eta == 1").groupby(["d", "load"]).mean()  # mean over seeds
gd_above = int((~(sp["gd"] < 1)).sum())
assert gd_above >= 0.9 * len(sp) and sp[["delta_exact", "delta_normalized"]].max().max() < 1, sp
print(f"spread key norms, eta 1: GD's mean error above 1 in {gd_above} of {len(sp)} (d, load) cells")

# %% [markdown]
# ## Takeaways

# %%
q, r = nl.notebook.Quote(ctx, "04_delta_rule"), nl.notebook.Quote(ctx, "04_delta_rule/recall")
at = lambda m, s, digits=3: r.ci(m, "recall_error", digits, d=256, eta=1, key_norm_spread=s, load=2.0)  # noqa: E731
u = w.query("key_norm_spread == 0 and eta == 1 and d == 256 and load == 2").mean()  # mean over seeds
nl.notebook.takeaways(ctx, f"""
- **As a memory write, the delta rule is the safe choice.** With spread key norms at $\\eta = 1$, $d = 256$ and load 2 the recall error is {at("delta_exact", 0.5)} for the exact delta rule and {at("delta_normalized", 0.5)} for the normalised one, against {at("hebbian", 0.5, 1)} for Hebbian and a mean of {r.mean("gd", "recall_error", 0, d=256, eta=1, key_norm_spread=0.5, load=2.0)} for GD, whose mean error exceeds 1 in {gd_above} of {len(sp)} (d, load) cells.
- **Against Hebbian, even with unit-norm keys** (correlated keys with overwrites): at $d = 256$ and load 2 the delta rule's error is {at("delta_exact", 0.0)}, Hebbian's {at("hebbian", 0.0)}, {r.number(u["hebbian"] / u["delta_exact"], "Hebbian / delta_exact recall error, unit-norm keys, d 256, eta 1, load 2", 1)} times higher.
- **With unit-norm keys the delta rule is GD at step $\\eta'$**, checked by hand and on the live benchmark above; its advantage over GD there is only the choice of step.
- **As the optimizer of the FFN levels it did not help.** Against `sgd_default` ({q.ci("sgd_default")} valid bpc), `delta` is higher by {q.diff("delta", "sgd_default")}, `delta_lr0.1` by {q.diff("delta_lr0.1", "sgd_default")} and the prototype's `delta_batch_mean` by {q.diff("delta_batch_mean", "sgd_default")}: all three intervals lie above zero (separated).
- **Neither the step nor the batch-mean defect makes a separated difference there**: against `delta`, `delta_lr0.1` {q.diff("delta_lr0.1", "delta")} and `delta_batch_mean` {q.diff("delta_batch_mean", "delta")} are not separated (both intervals hold zero). AdamW on those levels is higher than `sgd_default` too, by less: {q.diff("adamw", "sgd_default")} (separated).
""")

# %% [markdown]
# ## Exercises
# Predict first, then run the cell.
#
# 1. With spread key norms, does GD still diverge at the smaller step $\eta = 0.1$? Which key
#    norm makes $\eta\lVert k\rVert^2 > 2$?

# %%
ex1 = nl.recall.run_recall_benchmark(d=32, key_norm_spread=0.5, eta=0.1, methods=("gd", "delta_exact"))
ex1.pivot_table(index="load", columns="method", values="value").round(3)

# %% [markdown]
# <details><summary>Solution</summary>
#
# No: at $\eta = 0.1$ a write is unstable only for $\lVert k\rVert > \sqrt{20} \approx 4.5$, i.e.
# $e^{0.5z} > 4.5$, $z > 3$: about one key in a thousand. GD's errors stay bounded and close to the
# exact delta rule's, which at such a small step is nearly the same update ($1 + \eta\lVert k\rVert^2$
# is close to 1 for most keys).
# </details>
#
# 2. Without overwrites and with uncorrelated keys (`overwrite_frac=0`, `correlation=0`), how close
#    does Hebbian come to the delta rule at low load, and why?

# %%
ex2 = nl.recall.run_recall_benchmark(d=32, overwrite_frac=0.0, correlation=0.0, methods=("hebbian", "delta_exact"))
ex2.pivot_table(index="load", columns="method", values="value").round(3)

# %% [markdown]
# <details><summary>Solution</summary>
#
# Ahead at the lowest loads (up to a quarter), behind from load one half: nearly orthogonal unit keys give $Mk_i = v_i + \sum_{j\ne i} v_j (k_j^\top k_i)$
# with small cross terms, and a Hebbian write at step 1 stores each value in full, while the delta
# rule at $\eta = 1$ stores only half of it ($\eta' = 0.5$). The cross terms grow with the load, and
# with correlated keys or overwrites they do not average out: that is where the delta rule's
# erase-before-write wins.
# </details>
#
# 3. Add a configuration: the delta rule at $\eta' = 1$ on the FFN levels (an exact step on each
#    chunk's mean objective). Predict where it lands against `delta` ($\eta'$ = 0.5) and
#    `delta_lr0.1`. In the smoke view the next cell trains it (one seed, seconds on a CPU); the
#    committed view trains nothing.

# %%
if ctx.view == "smoke":
    grid, seeds, common = nl.EXPERIMENTS["04_delta_rule"].grid("smoke")
    base = next(g for g in grid if g.label == "delta")
    extra = nl.experiments.GridConfig("delta_lr1.0", base.preset, (*base.overrides, "cms.levels.medium.lr=1.0", "cms.levels.slow.lr=1.0"))
    ran = nl.experiments.run_grid(ctx.stem, [extra], seeds, ctx.results_dir / "exercise", jobs=0, common=common, echo=False)
    v = ran.loc[ran["metric"] == "valid_bpc", "value"].mean()
    print(f"smoke, 1 seed, valid bpc: delta_lr1.0 {v:.4f}; delta {exp.value('delta', 'valid_bpc'):.4f}; "
          f"delta_lr0.1 {exp.value('delta_lr0.1', 'valid_bpc'):.4f}; sgd_default {exp.value('sgd_default', 'valid_bpc'):.4f}")
else:
    print("set VIEW = 'smoke' to train delta_lr1.0 here (the committed view trains nothing)")

# %% [markdown]
# <details><summary>Solution</summary>
#
# With `aggregation="mean"` (the optimizer's default) $\eta'$ divides by the chunk's token count,
# so $\eta' = 1$ is a stable step, not a divergence. In the committed full results $\eta'$ = 0.1
# and 0.5 are not separated from each other, so the step hardly matters there; expect $\eta' = 1$
# close to them. One smoke seed separates nothing: to settle it, add the configuration to
# `EXPERIMENTS["04_delta_rule"]` and run the full view (3 seeds).
# </details>
#
# 4. In the widget, set the keys to spread norms and lower $\eta$ until GD stops diverging at load 1.
#    Is GD then better or worse than the delta rules? Raise $d$: does the answer change?
#
# <details><summary>Solution</summary>
#
# Around $\eta \approx 0.1$ to $0.2$ GD is bounded again and about as good as the delta rules, but at
# such small steps every rule stores only a small part of each value, so all errors are high; the
# delta rules reach their lowest errors at larger $\eta$ (around 0.5 to 1), where GD diverges. Raising
# $d$ changes little: the instability is per key ($\eta\lVert k\rVert^2 > 2$), not per dimension
# (more keys only make a long one more likely).
# </details>
