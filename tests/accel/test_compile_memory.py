"""compile (nlcore.accel.compile) of the Titans and HOPE blocks on CPU: traced with aot_eager (no code
generation), the compiled blocks must compute the uncompiled forward, new state and gradients, be
the code that runs (one graph shared by all layers, no graph break), leave windows with document
starts inside to the eager path, and train through the Trainer like the uncompiled model."""

from __future__ import annotations

import os

import pytest
import torch
from torch._dynamo.utils import counters

from nlcore.accel import compile as compiling
from nlcore.config import apply_overrides, preset
from nlcore.models.base import Resets
from nlcore.models.hope import HOPE
from nlcore.models.titans import TitansLM
from nlcore.training.trainer import Trainer

V, B, T = 11, 4, 16  # the blocks' shapes match the Trainer's below: compiled once for both tests
TITANS = {"linear_mom": ("linear", True), "linear": ("linear", False), "mlp_mom": ("mlp", True), "mlp": ("mlp", False)}


def titans(memory: str, momentum: bool) -> TitansLM:
    return TitansLM(V, d_model=16, n_layers=2, n_heads=2, d_ff=24, memory=memory, mem_hidden=2, mem_chunk=8,
                    momentum=momentum)


def hope() -> HOPE:  # the default config (in_forward CMS chain, momentum), tiny
    return HOPE(V, d_model=16, n_layers=2, n_heads=2, d_ff=24, cms_chunks=(8, 16), mem_chunk=8)


def count_calls(model) -> dict[str, int]:
    """Make `model`'s compiled parts count their calls, in the returned dict."""
    calls: dict[str, int] = {}
    for name, fn in list(model._compiled.items()):
        def counted(*a, _fn=fn, _n=name):
            calls[_n] = calls.get(_n, 0) + 1
            return _fn(*a)
        model._compiled[name] = counted
    return calls


def pair(make, dtype=torch.float64):
    """An uncompiled model, a compiled twin with the same parameters, and the twin's part calls. In float64
    by default: aot_eager runs the same aten ops, so the pair agrees to float64 rounding, while float32
    sums come out in a different order on other CPUs and thread counts (seen at 1e-5 on a 16-core machine)."""
    torch.manual_seed(0)
    off, on = make().to(dtype), make().to(dtype)
    on.load_state_dict(off.state_dict())
    on.compile_parts(compiling.compiler("aot_eager"))
    return off, on, count_calls(on)


def step(model, x, state, resets=None):
    """Forward and backward of a loss on the logits and the new state: (logits, state, grads)."""
    for p in model.parameters():
        p.grad = None
    logits, new = model(x, state, resets)
    (logits.square().mean() + sum(v.square().sum() for v in new.values())).backward()
    return logits, new, {n: p.grad for n, p in model.named_parameters()}


def check_equal(a, b):
    (la, sa, ga), (lb, sb, gb) = a, b
    tol = dict(rtol=1e-10, atol=1e-12)  # float64 (`pair`)
    torch.testing.assert_close(lb, la, **tol)
    assert sa.keys() == sb.keys() and ga.keys() == gb.keys()
    for k in sa:
        torch.testing.assert_close(sb[k], sa[k], **tol, msg=lambda m, k=k: f"state {k}: {m}")
    for n in ga:
        torch.testing.assert_close(gb[n], ga[n], **tol, msg=lambda m, n=n: f"{n}: {m}")


def inputs(model):
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, V, (B, T), generator=g)
    state = {k: 0.1 * torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in model.init_state(B).items()}
    return x, state


def resets(*cuts: int) -> Resets:
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[1, 0] = True  # row 1 starts a document at the window start
    for c in cuts:
        mask[c % B, c] = True
    return Resets(mask, tuple(cuts))


@pytest.mark.parametrize("case", list(TITANS))
def test_titans_compiled_block_matches_uncompiled(case):
    off, on, calls = pair(lambda: titans(*TITANS[case]))
    x, state = inputs(off)
    counters.clear()
    check_equal(step(off, x, state), step(on, x, state))
    # one graph per part, shared by both layers; nothing left to eager code inside
    assert calls == {"_block": 2, "_head": 1}
    assert not counters["graph_break"] and counters["stats"]["unique_graphs"] <= 2
    check_equal(step(off, x, state, resets()), step(on, x, state, resets()))  # starts at t = 0: compiled
    assert calls == {"_block": 4, "_head": 2}
    check_equal(step(off, x, state, resets(5)), step(on, x, state, resets(5)))  # a start inside: eager blocks
    assert calls == {"_block": 4, "_head": 3}
    with torch.no_grad():  # evaluation: an inference graph
        (lo, so), (ln, sn) = off(x, state), on(x, state)
    torch.testing.assert_close(ln, lo, rtol=1e-5, atol=1e-6)
    for k in so:
        torch.testing.assert_close(sn[k], so[k], rtol=1e-5, atol=1e-6, msg=k)


def test_hope_compiled_block_matches_uncompiled():
    off, on, calls = pair(hope)
    x, state = inputs(off)
    counters.clear()
    check_equal(step(off, x, state), step(on, x, state))
    # 2 segments of C_1 = 8 tokens, then the outer pass over the whole window, x 2 layers
    assert calls == {"_block": 6, "_head": 3}
    assert not counters["graph_break"]
    check_equal(step(off, x, state, resets()), step(on, x, state, resets()))
    assert calls == {"_block": 12, "_head": 6}
    check_equal(step(off, x, state, resets(11)), step(on, x, state, resets(11)))  # eager segments
    assert calls == {"_block": 12, "_head": 6}
    with torch.no_grad():  # evaluation: the in-forward writes still differentiate the compiled block
        torch.testing.assert_close(on(x, state)[0], off(x, state)[0], rtol=1e-5, atol=1e-6)


def hope_outer() -> HOPE:  # the chain updated by the outer CMS engine: no backward inside the forward
    return HOPE(V, d_model=16, n_layers=2, n_heads=2, d_ff=24, cms_chunks=(8, 16), mem_chunk=8, cms_mode="outer",
                chain_levels=("medium", "slow"))


@pytest.mark.parametrize("make", [lambda: titans("linear", True), hope_outer], ids=["titans_linear", "hope_outer"])
def test_compiled_backward_runs_outside_autocast(make):
    """Under bf16 autocast (as training runs, forward only) the memories keep float32, and so must
    their backward: compiled, AOTAutograd's default traces the backward under the forward's autocast
    (`backward_pass_autocast`), which runs the float32 loop's backward matmuls in bf16;
    `compiling.compiler` turns that off. Eager and compiled gradients agree to float32 rounding.
    (HOPE's in-forward writes take gradients inside the forward, under autocast, compiled or not.)"""
    off, on, _ = pair(make, torch.float32)
    x, state = inputs(off)
    out = []
    for model in (off, on):
        for p in model.parameters():
            p.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits, new = model(x, state, None)
        (logits.float().square().mean() + sum(v.float().square().sum() for v in new.values())).backward()
        out.append({n: p.grad for n, p in model.named_parameters()})
    for n in out[0]:
        torch.testing.assert_close(out[1][n], out[0][n], rtol=1e-4, atol=1e-6, msg=lambda m, n=n: f"{n}: {m}")


BASE = ["data.synth_chars=20000", "eval_every=0", "ckpt_every=0", "log_every=5", "data.batch_size=4",
        "data.seq_len=16", "model.d_model=16", "model.d_ff=24", "model.n_layers=2", "model.n_heads=2",
        "model.mem_chunk=8", "state.reset=doc", "data.synth_gap_min=150", "data.synth_gap_max=300"]
MODELS = {"titans_linear": ["model.kind=titans", "model.memory=linear"],
          "hope": ["model.kind=hope", "model.cms_chunks=8,16"],
          "hope_layer_teach": ["model.kind=hope", "model.cms_chunks=8,16", "model.cms_teach=layer"]}
# the parts each model compiles, the one counted, and how often a compiled window calls it: HOPE's
# block 3 times per layer (2 segments of 8 tokens, then the whole window), the layer teach's teach
# once per segment and layer
PARTS = {"titans_linear": ({"_block", "_head"}, "_block", 1), "hope": ({"_block", "_head"}, "_block", 3),
         "hope_layer_teach": ({"_memory", "_chain", "_teach", "_head"}, "_teach", 2)}


@pytest.mark.parametrize("kind", list(MODELS))
def test_training_matches_uncompiled(kind):
    def make(mode):
        cfg = apply_overrides(preset("smoke"), BASE + MODELS[kind] + ["steps=6", f"compile={mode}"])
        return Trainer(cfg, None, progress=False)

    off, on = make("off"), make("aot_eager")
    parts, counted, per_window = PARTS[kind]
    assert on.compile == "aot_eager" and set(on.model._compiled) == parts
    calls = count_calls(on.model)
    lo = torch.stack([off.train_step(s) for s in range(1, 7)])
    ln = torch.stack([on.train_step(s) for s in range(1, 7)])
    torch.testing.assert_close(ln, lo, rtol=1e-5, atol=1e-6)
    # both routes ran: compiled windows, and (fewer calls than 2 layers x 6 windows) eager ones
    assert 0 < calls[counted] < 2 * 6 * per_window
    for (n, p), (_, q) in zip(off.model.named_parameters(), on.model.named_parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.skipif(not (torch.cuda.is_available() or os.environ.get("NLCORE_INDUCTOR_TESTS") == "1"),
                    reason="inductor's code generation takes ~2 min on a CPU: runs on a GPU machine, or with "
                           "NLCORE_INDUCTOR_TESTS=1")
@pytest.mark.parametrize("T_,d,C", [(64, 32, 16), (128, 64, 64)])
def test_hope_layer_compiled_by_inductor_equals_eager(T_, d, C):
    """The HOPE memory layer compiled with inductor (code generation, as training runs it; the tests above
    use aot_eager) gives the eager layer's reads, end state and parameter gradients. An earlier variant
    of `hope_chunks` had passed every eager and aot_eager test and came out of inductor with gradients
    off by a factor ~10. The second case has the shapes of the fused loop's kernels (hope_loop.py: they
    run on CUDA), the first hope_chunks' own loop."""
    from nlcore.models.memory_layers import SelfModifyingMemory

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    B, H = 2, 2
    mem = SelfModifyingMemory(d, H, chunk=C).to(dev)
    st = {k: 0.1 * torch.randn(B, *s, device=dev) for k, s in mem.state_shapes().items()}
    u = torch.randn(B, T_, d, device=dev)
    w = torch.linspace(-1, 1, B * T_ * d, device=dev).view(B, T_, d)

    def run(fn):
        y, new = fn(u, st, None)
        loss = (y * w).sum() + sum((v * v).sum() for v in new.values())
        return [y.detach(), *(v.detach() for v in new.values()), *torch.autograd.grad(loss, list(mem.parameters()))]

    names = ["y", *(f"state {k}" for k in st), *(n for n, _ in mem.named_parameters())]
    want = run(mem)
    got = run(compiling.compiler("inductor")(mem))
    for n, a, b in zip(names, want, got):
        rel = ((a - b).norm() / a.norm().clamp_min(1e-30)).item()
        assert rel < 1e-4, (n, rel)
