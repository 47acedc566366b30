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
# # 02 · Surprise objectives
# > Does regressing each level's output onto its own "local surprise signal" help a character language model, by how much compared with the seed-to-seed spread, and what does the objective actually do at these sizes?
#
# Nested Learning (§2.2, Eq. 27) calls $u_\ell = \nabla_{y_\ell} L$ the local surprise signal of a
# level with output $y_\ell$. The prototype turned it into an auxiliary loss on the level outputs,
# which `nlcore.surprise` reproduces:
#
# $$
# \mathcal{L}_{\text{tot}} = L + \sum_{\ell:\,\lambda_\ell>0} \lambda_\ell\,
#   \mathrm{MSE}\Big(y_\ell,\ \mathrm{sg}\big[\mathrm{clip}(\nabla_{y_\ell} L,\,-c,\,c)\big]\Big),
# \qquad
# \frac{\partial}{\partial y_\ell}\,\lambda_\ell \mathrm{MSE}(y_\ell, t_\ell) = k_\ell\,(y_\ell - t_\ell),
# \quad k_\ell = \frac{2\lambda_\ell}{N_\ell}.
# $$
#
# $L$ is the mean cross-entropy over the $B\cdot T$ characters of a window, $N_\ell = B\cdot T\cdot d$
# the number of elements of $y_\ell$, sg a stop-gradient and $c = 10$ the prototype's clip. The
# parameters receive $\nabla_\theta L + J_{y_\ell}^\top k_\ell (y_\ell - t_\ell)$: the ordinary gradient
# plus the auxiliary term pulled back through the level.
#
# **What you'll see**
# 1. the objective's gradient computed by hand on a tiny model, equal to nlcore's implementation;
# 2. its telemetry during training, and the scale of the signal: the target is ≈ 0, clipping never
#    bites, so the objective acts as an activation L2 penalty $\lambda\,\mathrm{mean}(y^2)$;
# 3. held-out bits per character per weight setting, per corpus, with 95 % t intervals;
# 4. paired differences against `none` (same seeds), and a picker to look at any one pair seed by seed;
# 5. checks, takeaways quoted from the committed results, and exercises.
#
# | view | what runs | runtime (2 CPU cores) |
# |---|---|---|
# | committed (default) | nothing: re-plots the committed full results in `results/02_surprise/` | seconds on any CPU |
# | smoke | 3 weight settings × 1 seed on the synthetic corpus, smoke preset, CPU | under a minute on 2 CPU cores |
# | full | 6 weight settings × {WikiText-2, synthetic} × 3 seeds, `seed` preset | GPU, see the README |
#
# Modules: `nlcore.surprise` (the objective), `nlcore.models` (the nested LSTM and its taps),
# `nlcore.experiments`, `nlcore.stats` (t intervals), `nlcore.report.figures`, `nlcore.report.notebook`.

# %% tags=["parameters"]
VIEW = "committed"  # committed: re-plot the committed results (CPU, seconds) | smoke: run small on a CPU | full: train on a GPU
SEED = 0  # seeds the notebook; each run seeds itself from its configuration
DEVICE = "auto"  # "auto" | "cpu" | "cuda"

# %%
import nlcore as nl

ctx = nl.notebook.setup("02_surprise", view=VIEW, seed=SEED, device=DEVICE)

# %% [markdown]
# ## The gradient, by hand
# A tiny nested LSTM (vocabulary 11, width 8, 2 rows of 5 characters, float64) with a weight on its
# fast level. By hand: the ordinary gradient $\nabla_\theta L$ and the signal $u = \nabla_y L$ from
# one backward pass, the target $t = \mathrm{clip}(u)$, the auxiliary derivative $k(y - t)$ pulled
# back to the parameters. nlcore's `Surprise` (`impl="hooks"`) adds the same term inside a single
# backward pass with a tensor hook; the two must agree to rounding.

# %%
import torch
import torch.nn.functional as F

V, lam, c = 11, 0.3, 10.0
x, target = torch.randint(0, V, (2, 5)), torch.randint(0, V, (2, 5))  # (B, T) characters, next characters
model = nl.models.NestedLSTM(V, 8, 12, zero_init_ffn_out=False).double()
params, ys = list(model.parameters()), {}
model.tap_fn = lambda name, y: ys.setdefault(name, y.view_as(y))  # keep each level's output y
L = F.cross_entropy(model(x)[0].flatten(0, 1), target.flatten())  # mean over the B*T characters
*grad_L, u = torch.autograd.grad(L, params + [ys["fast"]], retain_graph=True)  # dL/dtheta, u = dL/dy
delta = 2 * lam / u.numel() * (ys["fast"] - u.clamp(-c, c))  # k (y - t), t = sg[clip(u)]
by_hand = [g + a for g, a in zip(grad_L, torch.autograd.grad(ys["fast"], params, delta, materialize_grads=True))]
model.tap_fn, sur = None, nl.Surprise(nl.SurpriseConfig(weights={"fast": lam}, clip=c, impl="hooks"), model)
sur.begin(1), sur.total_loss(F.cross_entropy(model(x)[0].flatten(0, 1), target.flatten())).backward(), sur.end()
assert all(torch.allclose(p.grad, g, rtol=0, atol=1e-12) for p, g in zip(params, by_hand))
print(f"by hand = nlcore on all {len(params)} parameter tensors; max |u| = {u.abs().max():.2g} (c = {c:g})")

# %% [markdown]
# Here $B\cdot T = 10$, so the elements of $u$ are of order $1/10$. In the real runs
# $B\cdot T = 8192$: the same formula makes them thousands of times smaller, which is the whole story
# of this notebook.
#
# ## The experiment
# The configurations of `nlcore.experiments.EXPERIMENTS["02_surprise"]`: the prototype's weight
# table, each on WikiText-2 and on the synthetic corpus (a Markov source whose entropy rate, the
# lowest bpc any model can reach, is known). Every configuration pins zero-initialised FFN outputs,
# so `wikitext2_none` is the same run as `persistent` of 03.
#
# | suffix | $\lambda_\text{fast}$ | $\lambda_\text{medium}$ | note |
# |---|---|---|---|
# | `none` | 0 | 0 | the baseline |
# | `w0.05_0.01` | 0.05 | 0.01 | the prototype's weights |
# | `w0.1_0.05` | 0.1 | 0.05 | |
# | `w0.3_0.1` | 0.3 | 0.1 | |
# | `fast_only_0.3` | 0.3 | 0 | |
# | `cheap_0.05_every4` | 0.05 | 0 | objective on every 4th step only |
#
# The smoke view runs the synthetic `none`, `w0.05_0.01` and `fast_only_0.3`.

# %%
exp = nl.notebook.experiment(ctx)
exp.configs

# %% [markdown]
# ## What the objective sees during training
# From one run's telemetry (`metrics.jsonl`, field `surprise`, one sample per log line), per
# weighted level: the auxiliary loss $\lambda_\ell\,\mathrm{MSE}(y_\ell, t_\ell)$; the whole-tensor
# norm $\lVert\nabla_{y_\ell}L\rVert_F$ beside the clip threshold $c$; and the typical element
# (root mean square) of the target beside that of $y_\ell - t_\ell$. Shown: the prototype's weights.
# Look at the middle panel first: the signal stays decades below $c$.

# %%
shown = next(c for c in exp.configs if c.endswith("w0.05_0.01"))
fig = nl.figures.surprise_telemetry(exp.run_dirs(shown)[0], title=f"The surprise signal stays far below the clip "
                                    f"threshold and the target far below y − t ({shown}, seed 0)")
ctx.show(fig, "surprise_telemetry")

# %% [markdown]
# ## How big is the surprise signal?
# $L$ is a *mean* over the $B\cdot T$ characters, so each element of $\nabla_{y}L$ carries a
# factor $1/(B\cdot T)$: with $B\cdot T = 8192$ (full) the elements are of order $10^{-5}$.
# Two consequences, checked on every logged step of every weighted run below:
#
# - **Clipping never bites.** $\max_e |g_e| \le \lVert g\rVert_F$, so a signal norm below $c = 10$
#   proves that no element was clipped; `clip_frac` is 0 throughout.
# - **The target is ≈ 0.** With $r = \mathrm{rms}(t)/\mathrm{rms}(y - t)$ (`ratio`),
#   $\lambda\,\mathrm{MSE}(y, t)$ differs from $\lambda\,\mathrm{mean}(y^2)$ by at most a relative
#   $2r + r^2$ (`gap_bound`, Cauchy–Schwarz), and its gradient $k(y-t)$ from $k\,y$ by a relative $r$.
#   At these sizes the objective is an **activation L2 penalty** on the level outputs.
#
# The maxima over steps and seeds, per configuration and level:

# %%
scales = nl.notebook.surprise_scales(exp)
cols = ["signal_norm", "clip", "clip_frac", "rms_signal", "rms_residual", "ratio", "gap_bound"]
scales.groupby(["config", "level"])[cols].max().map("{:.3g}".format)

# %% [markdown]
# ## Which weight setting predicts held-out text best?
# Mean over seeds of the validation bits per character with its 95 % t interval, one panel per
# corpus. The synthetic corpus shows its entropy rate; WikiText-2 shows the unigram model
# (character frequencies alone), named with its value when it lies far off the axis. The two
# corpora are not comparable with each other. Read the overlap with the corpus's `none`: the title
# counts the settings whose interval clears it.

# %%
panels = nl.notebook.corpus_panels(exp, {"wikitext2_": "WikiText-2", "synthetic_": "synthetic corpus"})
base = {c: c.split("_")[0] + "_none" for c in exp.configs}
apart = nl.notebook.unpaired_separated(exp.summary, base)
fig = nl.figures.ci_panels(exp.summary, "valid_bpc", panels, title=f"Unpaired, {len(apart)} of {sum(c != b for c, b in base.items())} "
                           "weight settings' intervals clear their corpus's baseline")
ctx.show(fig, "ci_valid_bpc")

# %% [markdown]
# ## Does surprise help? Paired differences against `none`
# Every configuration ran on the same seeds as its corpus's `none`, so the variation the seeds
# share (initialisation, data order) cancels in the per-seed difference. Each point is the mean of
# those differences with its 95 % t interval (`nlcore.stats.paired_diff_ci`, n = 3: t = 4.30); the
# grey band is ± the half-width of `none`'s own interval, the precision one would have without
# pairing. Green: the interval lies below zero; blue: it contains zero. The title counts them.

# %%
diffs = nl.notebook.paired_differences(exp.runs, base)
wt = diffs[diffs["config"].str.startswith("wikitext2_")]
head = (f"WikiText-2: lower on {int((wt.seeds_lower == wt.n).sum())} of {len(wt)} settings' every seed, "
        f"but only {int((wt.ci_high < 0).sum())} of {len(wt)} intervals clear zero") if len(wt) else \
    f"{int((diffs.ci_high < 0).sum())} of {len(diffs)} paired intervals clear zero"
fig = nl.figures.paired_diff_bars(diffs, "valid_bpc", title=head)
ctx.show(fig, "paired_diff_valid_bpc")
diffs.round(4)

# %% [markdown]
# ## One pair, seed by seed
# Pick a corpus and a weight setting: the left panel joins each seed's bpc under `none` to its bpc
# under the setting (green: lower), the right panel shows the three differences and their mean with
# the t interval. Compare the spread of the seeds on the left with the spread of the differences on
# the right: that gap is what pairing buys. (In JupyterLab with a kernel; a static copy shows the
# default choice.)

# %%
corpora = sorted({c.split("_")[0] for c in exp.configs})
settings = sorted({c.split("_", 1)[1] for c in exp.configs} - {"none"})
nl.widgets.explore(
    lambda corpus, setting: nl.figures.paired_seeds(exp.runs, f"{corpus}_{setting}", f"{corpus}_none"),
    corpus=nl.widgets.choice(corpora, corpora[-1], "corpus"),
    setting=nl.widgets.choice(settings, "w0.05_0.01", "setting"))

# %% [markdown]
# ## Results table
# Mean ± half-width of the 95 % t interval [low, high] over n seeds, as in the experiment's
# `summary.json`.

# %%
nl.figures.summary_table(exp.summary, ("valid_bpc", "test_bpc"), order=exp.configs, failed=exp.failed)

# %% [markdown]
# ## Checks
# These hold in every view: every number is finite; every configuration beats its corpus's
# unigram level; every weighted level logged its telemetry; a signal norm below $c$ never comes
# with a clipped element; the target is small beside $y - t$ (the L2-penalty reading); every
# configuration has its paired difference.

# %%
assert nl.notebook.all_finite(exp), "a NaN or inf in runs.csv or in a training loss"
unigram = {p: nl.notebook.unigram_bpc(exp.run_dirs(p + "_none")[0]) for p in corpora}
worse = {c: exp.value(c, "valid_bpc") for c in exp.configs if exp.value(c, "valid_bpc") >= unigram[c.split("_")[0]]}
assert not worse, f"not below the unigram level {unigram}: {worse}"
weighted = [c for c in exp.configs if not c.endswith("_none")]
assert set(scales["config"]) == set(weighted), f"telemetry missing for {set(weighted) - set(scales['config'])}"
assert ((scales["signal_norm"] >= scales["clip"]) | (scales["clip_frac"] == 0)).all(), "clipped below c?"
assert scales["gap_bound"].max() < 0.05, f"target not small beside y - t: {scales['gap_bound'].max():.3g}"
assert set(diffs["config"]) == set(weighted), f"paired differences missing: {set(weighted) - set(diffs['config'])}"
unigram

# %% [markdown]
# ## Takeaways
# Quoted from the committed full results (`results/02_surprise/`, 3 seeds), whatever this notebook's view.

# %%
q = nl.notebook.Quote(ctx, "02_surprise")
full = nl.notebook.committed_results("02_surprise")
fd = nl.notebook.paired_differences(full.runs, {c: c.split("_")[0] + "_none" for c in full.configs})
fs, wt = nl.notebook.surprise_scales(full), fd[fd["config"].str.startswith("wikitext2_")]
sy = fd[fd["config"].str.startswith("synthetic_")]
count = {k: q.number(int(v), k, digits=0) for k, v in {
    "WikiText-2 settings lower on every seed": (wt.seeds_lower == wt.n).sum(), "WikiText-2 settings": len(wt),
    "WikiText-2 intervals below zero": (wt.ci_high < 0).sum(), "synthetic intervals clearing zero":
    ((sy.ci_high < 0) | (sy.ci_low > 0)).sum(), "synthetic settings": len(sy)}.items()}
gap = q.number(100 * fs["gap_bound"].max(), "largest gap bound, percent (surprise_scales)", digits=2)
top = q.number(fs["signal_norm"].max(), "largest signal norm (surprise_scales)", digits=3)

# %%
nl.notebook.takeaways(ctx, f"""
- **On WikiText-2 surprise is lower on every seed, but mostly not separated.** All
  {count["WikiText-2 settings lower on every seed"]} of {count["WikiText-2 settings"]} weight settings
  lowered the validation bpc of every seed against `none`, yet only
  {count["WikiText-2 intervals below zero"]} of {count["WikiText-2 settings"]} paired t intervals clear zero:
  `w0.1_0.05` (Δ = {q.diff("wikitext2_w0.1_0.05", "wikitext2_none", digits=4)} bpc) and `cheap_0.05_every4`
  (Δ = {q.diff("wikitext2_cheap_0.05_every4", "wikitext2_none", digits=4)}); the prototype's weights give
  Δ = {q.diff("wikitext2_w0.05_0.01", "wikitext2_none", digits=4)}, not separated. Beside `none` at
  {q.ci("wikitext2_none")}, the effect is about a hundredth of a bit at most.
""")

# %%
nl.notebook.takeaways(ctx, f"""
- **On the synthetic corpus nothing is separated**: {count["synthetic intervals clearing zero"]} of
  {count["synthetic settings"]} paired intervals clear zero. `fast_only_0.3` gives
  Δ = {q.diff("synthetic_fast_only_0.3", "synthetic_none", digits=4)} with a wide interval (its seeds spread:
  {q.ci("synthetic_fast_only_0.3")} against `none`'s {q.ci("synthetic_none")}).
- **What acts is not the "surprise" target.** The largest signal norm in any run is {top}, far below
  $c = 10$, so nothing was clipped, and the auxiliary loss is within {gap} % of
  $\\lambda\\,\\mathrm{{mean}}(y^2)$: the objective is an activation L2 penalty on the level outputs.
""")

# %% [markdown]
# ## Exercises
# 1. **An explicit L2 penalty.** `surprise.clip=1e-12` clamps the target to (almost exactly) 0, so the
#    objective becomes $\lambda\,\mathrm{mean}(y^2)$. Predict: does `fast_only_0.3` with that clip
#    score the same bpc as with $c = 10$? The next cell runs it in the smoke view (set `VIEW = "smoke"`).
#
#    <details><summary>Solution</summary>
#
#    Nearly the same: the target was already ≈ 0 (`ratio` in the scale table is tiny), so changing
#    it to exactly 0 changes each gradient by a relative $r$ only, and the two runs agree far more
#    closely than the seed-to-seed spread (in the smoke view, to the printed precision).
#    </details>

# %%
if ctx.trains and "synthetic_fast_only_0.3" in exp.configs:
    cfg = nl.apply_overrides(ctx.config, ["data.corpus=synthetic", "surprise.weights.fast=0.3", "surprise.clip=1e-12"])
    l2 = nl.train(cfg, progress=False)["valid_bpc"]
    print(f"fast_only_0.3: clip 1e-12 (pure L2) {l2:.4f} bpc, clip 10 {exp.value('synthetic_fast_only_0.3', 'valid_bpc'):.4f} bpc")
else:
    print("committed view: set VIEW = 'smoke' to run this exercise (about 2 s on a CPU)")

# %% [markdown]
# 2. **When would $c$ bite?** The signal's elements scale as $1/(B\cdot T)$. With $T = 256$ and
#    $d = 256$, at which batch size $B$ would the largest signal norm in the scale table reach $c$,
#    if the per-character gradient stayed the same?
#
#    <details><summary>Solution</summary>
#
#    $\lVert g\rVert_F$ scales as $1/\sqrt{B\cdot T}$ at a fixed per-character gradient (there are
#    $B\cdot T\cdot d$ elements, each $\propto 1/(B\cdot T)$). Reaching $c$ from the largest norm
#    $s$ needs $B' = B\,(s/c)^2$, far below one row: at any batch size a real run uses, the
#    prototype's $c = 10$ is inert, and even an element-wise bound ($|g_e| \le \lVert g\rVert_F$) never
#    reaches it. The cell below computes $B'$.
#    </details>

# %%
norms = nl.notebook.surprise_scales(full)
s, B = norms["signal_norm"].max(), norms["numel"].max() / (256 * 256)  # B = N / (T d)
print(f"largest signal norm {s:.3g} at B = {B:g}; c would be reached at B' = B (s/c)^2 = {B * (s / 10) ** 2:.3g} rows")

# %% [markdown]
# 3. **Every fourth step.** `cheap_0.05_every4` applies $\lambda_\text{fast} = 0.05$ on one step in four.
#    If the objective is an L2 penalty whose effect grows with its average strength, predict its
#    paired difference beside `w0.05_0.01` (same $\lambda_\text{fast}$, every step), then check in the
#    paired-differences figure.
#
#    <details><summary>Solution</summary>
#
#    A quarter of the average strength predicts a smaller effect than `w0.05_0.01`'s; the figure
#    shows it smaller on WikiText-2, with the narrowest interval of the WikiText-2 settings (its seeds agree most), and
#    not separated from zero on the synthetic corpus, like every setting there.
#    </details>
