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
# # 00 · Orientation
# > What is Nested Learning, which model do these lessons train, what went wrong with the prototype
# > this project replaces, and how should you read the numbers the lessons report?
#
# Every lesson measures one thing: how well a model predicts held-out text, in bits per character,
# averaged over a few seeds with a confidence interval. Two formulas carry the whole series. A CMS
# level $\ell$ with chunk $C_\ell$ applies its accumulated gradients only at steps that $C_\ell$
# divides (Eq. 31, lesson 01), and a model is scored by
#
# $$
# \text{bpc} = -\frac{1}{N}\sum_{t=1}^{N} \log_2 p_\theta\big(x_t \mid x_{<t}\big),
# \qquad
# \bar x \pm t_{n-1}\,\frac{s}{\sqrt n}\ \text{ over } n \text{ seeds}\ (t_{n-1}\text{: the Student-t quantile for a 95 \% interval).}
# $$
#
# **What you'll see**
# 1. Nested Learning in one page, and the nested LSTM drawn as levels with their update frequencies;
# 2. the prototype: what its numbers were, and where its settings land against a unigram model;
# 3. what bits per character measure, on one ladder from "knows nothing" to the best model;
# 4. what a 95 % Student-t interval over three seeds means (a widget: move n and the spread);
# 5. how to use the series: views, lesson order, JupyterLab.
#
# | view | what runs | runtime |
# |---|---|---|
# | committed (default) | nothing trains: reads committed files, draws | seconds on any CPU |
# | smoke | the same (this notebook has no experiment) | seconds |
# | full | the same | seconds |
#
# Modules: `nlcore.config` (presets), `nlcore.models` (the nested LSTM), `nlcore.stats` (t intervals),
# `nlcore.report.notebook` (setup, quoted numbers), `nlcore.report.figures`, `nlcore.report.widgets`.

# %% tags=["parameters"]
VIEW = "committed"  # committed: re-plot the committed results (CPU, seconds) | smoke: run small on a CPU | full: train on a GPU
SEED = 0  # seeds the notebook
DEVICE = "auto"  # "auto" | "cpu" | "cuda"

# %%
import nlcore as nl

ctx = nl.notebook.setup("00_orientation", view=VIEW, seed=SEED, device=DEVICE)

# %% [markdown]
# ## Nested Learning in one page
# A neural network and the optimiser that trains it are usually described as two different things:
# the network maps inputs to outputs, the optimiser changes the network's weights. Nested Learning
# (Behrouz et al., NeurIPS 2025) describes both as *learners*: each one compresses its own stream of
# inputs (its *context flow*) into its own state, and they differ mainly in **how often they update**.
#
# - An attention layer or a recurrent state updates at every token: it is the fastest learner.
# - The optimiser's momentum updates at every training step, from the gradients it sees.
# - A weight matrix trained by gradient descent updates once per step (or more rarely), and its
#   state is the knowledge it has accumulated over the whole training run: the slowest learner.
#
# Seen this way a model is a stack of nested optimisation problems, ordered by update frequency.
# The paper's **continuum memory system (CMS)** makes the frequencies explicit: parameters are split
# into levels, and a level with chunk $C$ updates only every $C$ steps, on the gradients it
# accumulated meanwhile. Fast levels adapt quickly and forget quickly; slow levels integrate over
# long stretches of training. Lessons 01–04 test that idea on a small character language model;
# lesson 06 compares it with HOPE and Titans, models whose memories learn *inside* the forward pass.

# %% [markdown]
# ## The nested LSTM: one model, three update frequencies
# The model of lessons 01–05, drawn from the `seed` preset (`nl.preset("seed")`), the configuration
# every full run starts from. Each part is coloured by the CMS level that owns its parameters (the
# model's own `level_of`), and under it: the level's chunk $C$, its optimiser and how many updates it
# makes in one full run. Read it left to right: characters are embedded, an LSTM reads them
# (fast level), two feed-forward blocks transform the LSTM's output (medium and slow levels), and the
# head predicts the next character.

# %%
cfg = nl.preset("seed")
corpus = nl.notebook.corpus_summary("wikitext2")  # the committed summary of the prepared corpus
vocab = corpus["stats"]["vocab_size"]
fig = nl.figures.level_diagram(cfg, vocab)
ctx.show(fig, "nested_lstm_levels")

# %% [markdown]
# The medium and slow feed-forward blocks hold as many parameters as each other but see very
# different numbers of updates: that ratio is what lesson 01 is about.

# %% [markdown]
# ## The prototype
# This repository replaces an earlier prototype of the same three-level model. Its headline number
# was a character "perplexity" computed from its **training loss**, not from held-out text; its
# embedding and output head were never trained; and it divided each slow level's Adam learning rate by
# the chunk size, which (lesson 01) makes a level with chunk $C$ learn about $C^2$ times less than the
# fast one. The project re-ran the prototype's settings behind a compatibility switch
# (`compat=prototype`, experiment `prototype_match`, three seeds) and scored them on held-out text.
# The numbers below are read from the committed results by code, never typed:

# %%
qp = nl.notebook.Quote(ctx, "prototype_match")  # results/prototype_match/summary.json
qc = nl.notebook.Quote(ctx, "01_cms")
qd = nl.notebook.Quote(ctx, "data/wikitext2")  # the corpus summary: the unigram level
unigram = nl.notebook.corpus_unigram_bpc("wikitext2")
nl.notebook.takeaways(ctx, f"""
- The prototype's settings with a ReLU activation: **{qp.ci("prototype_relu_persistent")}** valid bits
  per character; with GELU (which one the prototype used is not known): {qp.ci("prototype_gelu_persistent")}.
- A unigram model, which predicts every character from its training-set frequency alone and ignores
  the context, scores **{qd.number(unigram, "unigram bpc, valid split")}**: the prototype's settings
  are worse than a model that does not read the text at all.
- The same model with every part trained (`seed` preset, lesson 01's `default`): {qc.ci("default")}.
""")

# %% [markdown]
# ## Bits per character
# A language model assigns a probability $p_\theta(x_t \mid x_{<t})$ to each next character. Its
# loss on a character is $-\log_2 p$ bits: the length of the code an ideal compressor driven by the
# model would spend on it. Averaged over a held-out text this is **bits per character (bpc)**: lower
# is better. Three reference levels make the number readable:
#
# - a uniform guess over the vocabulary costs $\log_2 V$ bits for every character;
# - the unigram model (character frequencies, no context) is the level any trained model must beat;
# - the trained nested LSTM shows how far context takes a small model in about a minute of GPU training.
#
# Every value on this ladder is computed from committed files (`results/data/wikitext2/`,
# `results/prototype_match/`, `results/01_cms/`).

# %%
import math

ladder = {f"uniform over V = {vocab} characters": math.log2(vocab),
          "unigram model (frequencies only)": unigram,
          "prototype's settings (held out)": qp.record("prototype_relu_persistent")["mean"],
          "nested LSTM, seed preset (default)": qc.record("default")["mean"],
          "CMS off (lesson 01's best)": qc.record("cms_off")["mean"]}
fig = nl.figures.bpc_ladder(ladder, highlight=list(ladder)[:2])
fig.suptitle("The prototype's settings sit between a uniform guess and the unigram model; "
             "trained models are far below both", fontsize=11)
ctx.show(fig, "bpc_ladder")

# %% [markdown]
# A training loss is measured on windows the model has just been trained on; it rewards memorising
# them, and it cannot be set beside anyone's held-out number. Every number in the series is held out.

# %% [markdown]
# ## A 95 % interval over three seeds
# Each full configuration is trained with three seeds (three initialisations and data orders). The
# lessons report the mean and its **Student-t 95 % interval**, $\bar x \pm t_{0.975,\,n-1}\, s/\sqrt n$:
# if the experiment were repeated many times, 95 % of such intervals would contain the true mean. With
# only $n = 3$ seeds the standard deviation $s$ is itself uncertain, so the multiplier is not 2 but
# $t_{0.975,2}$, which is more than twice as large. First, by hand on the committed seeds of lesson 01's
# default, checked against `nlcore.stats.t_ci`:

# %%
import torch

runs = nl.notebook.committed_results("01_cms").runs
x = torch.tensor(runs.query("config == 'default' and metric == 'valid_bpc'")["value"].to_numpy())  # (n,)
n = x.numel()
mean, s = x.mean(), x.std(unbiased=True)  # sample standard deviation, n - 1 in the denominator
t = nl.stats.t_quantile(0.975, n - 1)  # the Student-t multiplier for n - 1 degrees of freedom
lo, hi = mean - t * s / n**0.5, mean + t * s / n**0.5
ref = nl.stats.t_ci(x.numpy())
assert torch.allclose(torch.tensor([mean, lo, hi], dtype=torch.float64), torch.tensor(ref, dtype=torch.float64))
print(f"n = {n}: mean {mean:.4f}, s = {s:.4f}, t = {t:.3f} -> [{lo:.4f}, {hi:.4f}] (nlcore: {ref[1]:.4f}, {ref[2]:.4f})")

# %% [markdown]
# Move the sliders (in JupyterLab with a kernel; a rendered copy shows the default state). Left:
# $n$ example seeds with the spread you choose, their t interval and the naive mean $\pm 2 s/\sqrt n$.
# Right: over many simulated experiments, how often each interval actually contains the true mean.
# The t interval keeps its promise at every $n$; the naive one covers far less than 95 % at small $n$.

# %%
nl.widgets.explore(lambda n, spread: nl.figures.t_interval_figure(n, spread),
                   n=nl.widgets.slider(3, 2, 10, description="seeds n"),
                   spread=nl.widgets.slider(0.01, 0.002, 0.05, 0.002, description="spread s (bpc)"))

# %% [markdown]
# Two configurations trained on the same seeds share their data order and initialisation, so the
# lessons also compare them **seed by seed**: the interval of the paired differences
# (`q.diff(a, b)` in the takeaways) removes the noise both share. A difference whose interval
# contains 0 is reported as *not separated*.

# %% [markdown]
# ## How to use the series
# **Views.** Every lesson has one parameter, `VIEW`, in its second cell:
#
# | `VIEW` | what it does | where it writes |
# |---|---|---|
# | `"committed"` (default) | re-plots the committed full results, on any CPU, in seconds | `build/` only |
# | `"smoke"` | runs the whole experiment small on a CPU (synthetic corpus, one seed) | `build/smoke/` |
# | `"full"` | trains the real grid on a GPU | `results/` and `figures/` |
#
# The takeaways always quote the committed full results, whatever the view.
#
# **Order.** 00 orientation → 01 continuum memory system (Eq. 31) → 02 surprise objective →
# 03 persistent state → 04 delta rule → 05 ablations (every lever at once) → 06 HOPE and Titans;
# appendix A1 performance (throughput and kernels, no lesson content).
#
# **Running them.** `jupyter lab notebooks/` opens the series; each `notebooks/NN_name.ipynb` is
# paired with its `NN_name.py` source by jupytext, so saving in JupyterLab updates both. `make
# notebooks` re-executes every lesson in the committed view and rewrites the rendered copies;
# `python -m nlcore notebooks --view smoke --only 01` runs one lesson small.

# %% [markdown]
# ## Checks

# %%
assert unigram < math.log2(vocab), "the unigram model must beat a uniform guess"
assert qp.record("prototype_relu_persistent")["ci_low"] > unigram, "prototype settings expected above the unigram level"
assert qc.record("default")["ci_high"] < unigram
assert sum(r["params"] for r in nl.figures.level_parts(cfg, vocab)) > 0

# %% [markdown]
# ## Exercises
# 1. **Predict, then check.** With $n = 2$ seeds, how much wider is the t interval than the naive
#    $\pm 2 s/\sqrt n$? Set the widget to $n = 2$.
#    <details><summary>Solution</summary>
#    $t_{0.975,1} \approx 12.7$, so more than six times wider; the naive interval covers about 70 %
#    of the time instead of 95 %. Two seeds tell you almost nothing about the size of the noise.
#    </details>
# 2. In the level diagram, how many updates would the slow level make if the run were 200 steps long?
#    Check with `nl.figures.level_diagram(nl.apply_overrides(cfg, ["steps=200"]), vocab)`.
#    <details><summary>Solution</summary>
#    $\lfloor 200/256 \rfloor = 0$ regular updates, plus one when the final partial chunk is flushed
#    (`cms.partial="flush"`): a single update, at the last step.
#    </details>
# 3. Why is a training loss not evidence that a model predicts text well?
#    <details><summary>Solution</summary>
#    A model can lower its training loss by memorising the windows it was trained on, and a training
#    loss cannot be compared with held-out results. Only text the model has never seen measures
#    prediction; scored that way, the prototype's settings lose even to the unigram model.
#    </details>
