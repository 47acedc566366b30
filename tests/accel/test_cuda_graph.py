"""cuda_graph="on" (nlcore.accel.cuda_graph) on CPU: the static-buffer path with the capture emulated
must be bit-identical to the plain eager step, fall back (counted) where it cannot replay, and
keep every .grad tensor in place."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from nlcore.accel import cuda_graph as fastpath
from nlcore.cms import CMS
from nlcore.config import CMSConfig, LevelConfig, apply_overrides, preset
from nlcore.models import NestedLSTM
from nlcore.training.trainer import Trainer

BASE = ["data.synth_chars=20000", "eval_every=0", "ckpt_every=0", "log_every=10"]
SURPRISE = ["surprise.weights.fast=0.05", "surprise.weights.medium=0.01"]
CASES = {
    # 16 rows: 39 windows, so step 40 wraps the stream (state reset -> zeros copied in)
    "persistent": ["data.batch_size=16"],
    # long documents: some windows have document starts inside (eager), most do not (replayed)
    "doc": ["state.reset=doc", "data.batch_size=4", "data.synth_gap_min=200", "data.synth_gap_max=400"],
    "surprise_hooks": [*SURPRISE, "surprise.impl=hooks"],  # 2 levels: reentrant autograd in a hook
    "surprise_ref_every2": [*SURPRISE, "surprise.impl=reference", "surprise.every=2"],
    "hier_every_n": ["model.hierarchical_state=true", "state.reset=every_n", "state.reset_every=3"],
    "mean_dropout": ["cms.aggregation=mean", "model.dropout=0.1"],  # the CPU RNG must be left alone
    "transformer": ["model.kind=transformer", "model.n_layers=1", "model.n_heads=2"],
    "titans": ["model.kind=titans", "model.n_layers=1", "model.n_heads=2", "model.mem_chunk=8"],
    # a backward inside the forward (the in-forward CMS writes)
    "hope": ["model.kind=hope", "model.n_layers=1", "model.n_heads=2", "model.mem_chunk=8",
             "model.cms_chunks=16,32"],
    # the writes taught by each layer's own loss, layer by layer
    "hope_layer_teach": ["model.kind=hope", "model.n_layers=2", "model.n_heads=2", "model.mem_chunk=8",
                         "model.cms_chunks=16,32", "model.cms_teach=layer"],
}


def make(extra, cuda_graph, steps=40):
    cfg = apply_overrides(preset("smoke"), BASE + [f"steps={steps}", f"cuda_graph={cuda_graph}", *extra])
    return Trainer(cfg, None, progress=False)


def run(t, steps=40):
    return torch.stack([t.train_step(s) for s in range(1, steps + 1)])


def same(a, b) -> bool:
    """Bit-identical nested structures of tensors / numbers."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    return a == b


@pytest.mark.parametrize("case", list(CASES))
def test_graph_path_is_bit_identical_to_off(case):
    off = make(CASES[case], "off")  # built (seeded) and run one after the other: dropout draws
    lo = run(off)  # from the global RNG
    graphed = make(CASES[case], "on")
    lf = run(graphed)
    assert torch.equal(lo, lf), (lo - lf).abs().max()
    assert same(off.model.state_dict(), graphed.model.state_dict())
    assert same(off.carrier.state, graphed.carrier.state)
    owned = off.model.levels()  # a level owning no parameter (the new models keep all in fast) never updates
    every = {n: (40 // c if n in owned else 0) for n, c in (("fast", 1), ("medium", 4), ("slow", 16))}
    assert off.cms.updates == graphed.cms.updates == every
    assert same(off.cms.drain_telemetry(), graphed.cms.drain_telemetry())  # grad and update norms too
    assert same({n: o.state_dict() for n, o in off.cms.optimizers.items() if o is not None},
                {n: o.state_dict() for n, o in graphed.cms.optimizers.items() if o is not None})
    if off.surprise is not None:
        assert same(off.surprise.drain_metrics(), graphed.surprise.drain_metrics())
    tele = graphed.graph.telemetry()
    assert tele["graph_steps"] + tele["eager_steps"] == 40 and tele["graph_steps"] > 0
    assert tele["capture_errors"] == {}
    expect = {"plain"} if off.surprise is None else {"surprise", "surprise_record"}
    if case == "surprise_ref_every2":
        expect |= {"plain"}  # odd steps: objective off
    assert set(tele["graphs"]) == expect


def test_fallback_counter_counts_doc_reset_windows():
    t = make(CASES["doc"], "on")
    n_reset = 0
    for s in range(1, 41):
        mask, _ = t.carrier.cuts.window((s - 1) % len(t.train_stream))
        n_reset += bool(mask.any())
        t.train_step(s)
    tele = t.graph.telemetry()
    assert 0 < n_reset < 40
    assert tele["eager_reasons"] == {"doc_reset": n_reset} and tele["graph_steps"] == 40 - n_reset


def test_grads_stay_in_place_and_are_zeroed_not_none():
    t = make([], "on")
    t.train_step(1)
    ptrs = {id(p): p.grad.data_ptr() for p in t.model.parameters()}
    bufs = {id(p): p.grad for p in t.model.parameters()}
    for s in range(2, 5):
        t.train_step(s)
        for p in t.model.parameters():
            assert p.grad is bufs[id(p)] and p.grad.data_ptr() == ptrs[id(p)]
        for p in t.cms.params["fast"]:  # chunk 1: updated every step, zeroed in place
            assert not p.grad.any()
        medium = [p.grad.abs().sum() for p in t.cms.params["medium"]]  # chunk 4: zeroed at step 4
        assert (sum(medium) == 0) == (s == 4)


def test_static_grads_tile_one_flat_buffer_per_level():
    from nlcore.optim.sliced import flat_base

    t = make([], "on")
    for s in range(1, 4):
        t.train_step(s)
    bases = [flat_base([p.grad for p in ps]) for ps in t.cms.params.values()]
    assert all(b is not None for b in bases)
    assert len({b.data_ptr() for b in bases}) == len(bases)  # one buffer per level


def test_grads_replaced_from_outside_are_copied_back():
    off, graphed = make([], "off"), make([], "on")
    for s in range(1, 11):
        if s == 6:  # e.g. a checkpoint load: fresh .grad tensors (and None) mid-chunk
            for t in (off, graphed):
                ps = list(t.model.parameters())
                ps[0].grad = None if ps[0].grad is None else ps[0].grad.clone()
                ps[-1].grad = ps[-1].grad.clone() if ps[-1].grad is not None else None
        assert torch.equal(off.train_step(s), graphed.train_step(s))
    assert same(off.model.state_dict(), graphed.model.state_dict())


def test_capture_failure_falls_back_and_restores(monkeypatch):
    class Broken(fastpath._EmulatedGraph):  # runs the body (like a capture that got far), then fails
        def __init__(self, fn):
            fn()
            raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(fastpath, "_EmulatedGraph", Broken)
    off = make(SURPRISE, "off", steps=12)
    lo = run(off, 12)
    graphed = make(SURPRISE, "on", steps=12)
    with pytest.warns(RuntimeWarning, match="capture of variant"):
        lf = run(graphed, 12)
    assert torch.equal(lo, lf)
    assert same(off.model.state_dict(), graphed.model.state_dict())
    assert same(off.surprise.drain_metrics(), graphed.surprise.drain_metrics())
    tele = graphed.graph.telemetry()
    assert tele["graph_steps"] == 0 and tele["eager_reasons"] == {"capture_failed": 12}
    assert set(tele["capture_errors"]) == {"surprise", "surprise_record"}
    assert graphed.model.tap_fn is None


def test_resume_is_bit_identical_and_logs_telemetry(tmp_path):
    extra = ["steps=24", "ckpt_every=8", "log_every=4", "data.batch_size=4", "data.seq_len=16"]
    straight = Trainer(make(extra, "on").cfg, tmp_path / "a", progress=False)
    s1 = straight.run()
    t = Trainer(straight.cfg, tmp_path / "b", progress=False)
    t.run(stop_after=13)
    resumed = Trainer(straight.cfg, tmp_path / "b", progress=False)
    s2 = resumed.run(resume=True)
    assert same(straight.model.state_dict(), resumed.model.state_dict())
    assert s1["valid_bpc"] == s2["valid_bpc"]
    off = Trainer(make(extra, "off").cfg, tmp_path / "c", progress=False)  # and equal to the eager run
    assert off.run()["valid_bpc"] == s1["valid_bpc"]
    rec = json.loads((tmp_path / "a" / "metrics.jsonl").read_text().splitlines()[-1])
    assert rec["cuda_graph"]["graph_steps"] == 24 and rec["cuda_graph"]["graphs"] == ["plain"]


def test_config_validation():
    with pytest.raises(ValueError, match="cuda_graph"):
        apply_overrides(preset("smoke"), ["cuda_graph=cuda"])
    with pytest.raises(ValueError, match="cuda_graph.*delta"):
        apply_overrides(preset("smoke"), ["cuda_graph=on", "cms.levels.medium.optimizer=delta"])
    assert preset("seed").cuda_graph == "auto" and preset("smoke").cuda_graph == "auto"


def test_auto_cuda_graph_resolution():
    """auto: the plain step on CPU and with the delta optimizers (graph only on CUDA)."""
    t = Trainer(apply_overrides(preset("smoke"), ["data.synth_chars=20000", "data.batch_size=4"]), None,
                progress=False)
    assert t.cuda_graph == "off" and t.graph is None
    d = Trainer(apply_overrides(preset("smoke"), ["data.synth_chars=20000", "data.batch_size=4",
                                                  "cms.levels.medium.optimizer=delta"]), None, progress=False)
    assert d.cuda_graph == "off"


def test_cms_zero_grad_inplace():
    m = NestedLSTM(11, d_model=8, d_ff=16)
    levels = (LevelConfig("fast", chunk=1, optimizer="sgd", lr=0.1), LevelConfig("medium", chunk=2, optimizer="adamw"),
              LevelConfig("slow", chunk=2, optimizer="sgd", lr=0.1))
    cms = CMS(CMSConfig(levels=levels, grad_clip=1.0), m.levels(), model=m, zero_grad="inplace")
    x = torch.randint(0, 11, (2, 5))
    m(x)[0].square().mean().backward()
    held = [p.grad for p in m.parameters()]
    assert cms.after_backward(1) == ["fast"]
    assert all(p.grad is g for p, g in zip(m.parameters(), held))
    assert all(not p.grad.any() for p in cms.params["fast"])
    assert any(p.grad.any() for p in cms.params["medium"])  # chunk 2: still accumulating
    m(x)[0].square().mean().backward()
    assert cms.after_backward(2) == ["fast", "medium", "slow"]
    assert all(p.grad is g and not g.any() for p, g in zip(m.parameters(), held))
    with pytest.raises(ValueError, match="zero_grad"):
        CMS(CMSConfig(levels=levels), m.levels(), model=m, zero_grad="sometimes")


@pytest.mark.parametrize("case", ["persistent", "doc", "transformer", "titans", "hope", "hope_layer_teach"])
def test_graphed_evaluation_equals_eager_evaluation(case):
    """Trained a few steps, then valid evaluated twice in a row (the second from a captured graph's
    replays only): every number equals cuda_graph=off's bit for bit; windows with document starts
    inside and the stream's final shorter window (if any) run eagerly."""
    off, graphed = make(CASES[case], "off", steps=6), make(CASES[case], "on", steps=6)
    run(off, 6), run(graphed, 6)
    for _ in range(2):
        a = off.evaluate("valid", by_position=True)
        b = graphed.evaluate("valid", by_position=True)
        assert a == b
    stream, cuts = graphed.eval_streams["valid"]
    (g,) = graphed.eval_graphs.values()
    assert off.eval_graphs == {} and g.failed is None
    if case == "doc":
        resets = sum(bool(cuts.window(i)[0].any()) for i in range(len(stream)))
        assert 0 < resets < len(stream) and g.graph_windows == 2 * (len(stream) - resets)
    else:
        assert g.graph_windows == 2 * len(stream)


def test_a_failed_evaluation_capture_warns_once_and_evaluates_eagerly(monkeypatch):
    def broken(owner):
        owner._body()
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(fastpath, "_EmulatedEval", broken)
    off, graphed = make(CASES["hope"], "off", steps=4), make(CASES["hope"], "on", steps=4)
    run(off, 4), run(graphed, 4)
    with pytest.warns(RuntimeWarning, match="capture of the evaluation window failed"):
        b = graphed.evaluate("valid")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once: no second capture, no second warning
        again = graphed.evaluate("valid")
    assert off.evaluate("valid") == b == again
    (g,) = graphed.eval_graphs.values()
    assert g.graph_windows == 0 and "not permitted" in g.failed


def test_the_gpu_self_check_of_graphed_evaluation_runs_and_passes_on_cpu(tmp_path):
    """scripts/reproduce/check_eval_graph.py (run on the GPU machine) in its CPU smoke form."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "reproduce" / "check_eval_graph.py"
    spec = importlib.util.spec_from_file_location("check_eval_graph", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "check.json"
    assert mod.main([str(out), "--smoke", "--steps", "2", "--windows", "3", "--configs", "hope", "titans_linear"]) == 0
    rec = json.loads(out.read_text())
    assert [c["config"] for c in rec["checks"]] == ["hope", "titans_linear"] and rec["errors"] == {}
    assert all(c["pass"] and c["graph_windows"] == 6 and c["diff"] == 0.0 for c in rec["checks"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("case", ["persistent", "doc", "titans", "hope", "hope_layer_teach", "hope_kernels"])
def test_graphed_evaluation_on_cuda_equals_the_eager_one(case):
    """On the GPU: the same trained model evaluated from the graph and eagerly (same kernels, so
    equal up to the order of float sums), and every window without a document start replayed."""
    from nlcore.training.evaluate import evaluate

    extra = CASES.get(case) or ["model.kind=hope", "model.d_model=128", "model.n_heads=2", "model.d_ff=96",
                                "model.mem_chunk=64", "model.cms_chunks=64,128", "data.seq_len=128"]
    t = make([*extra, "device=cuda"], "on", steps=6)
    run(t, 6)
    stream, cuts = t.eval_streams["valid"]
    graphed = t.evaluate("valid")["bpc"]
    eager = evaluate(t.model, stream, t.cfg.state, device=t.device, amp=t.amp, doc_cuts=cuts)["bpc"]
    (g,) = t.eval_graphs.values()
    assert g.failed is None and g.graph_windows > 0
    assert abs(graphed - eager) < 1e-5, (graphed, eager)
