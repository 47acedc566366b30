"""compile (nlcore.accel.compile) on CPU: the compiled loss and model parts must compute the uncompiled
step (traced with aot_eager, no code generation), be the code that actually runs, and be refused
where they cannot work; the change-norm telemetry of the CMS is measured where the log reads it."""

from __future__ import annotations

import pytest
import torch

from nlcore.accel import compile as compiling
from nlcore.accel.precision import fp32_cross_entropy
from nlcore.cms import CMS
from nlcore.config import CMSConfig, LevelConfig, apply_overrides, preset
from nlcore.models import NestedLSTM
from nlcore.training.trainer import Trainer

BASE = ["data.synth_chars=20000", "eval_every=0", "ckpt_every=0", "log_every=5", "data.batch_size=8"]
CASES = {
    "persistent": [],
    "surprise_hooks": ["surprise.weights.fast=0.05", "surprise.weights.medium=0.01", "surprise.impl=hooks"],
    "surprise_slow_ref": ["surprise.weights.slow=0.01", "surprise.impl=reference"],
    "graph_doc": ["cuda_graph=on", "state.reset=doc", "data.synth_gap_min=200", "data.synth_gap_max=400"],
}


def make(extra, compile_mode):
    cfg = apply_overrides(preset("smoke"), BASE + ["steps=12", f"compile={compile_mode}", *extra])
    return Trainer(cfg, None, progress=False)


def test_resolve():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert compiling.resolve("auto", cpu) is None and compiling.resolve("auto", cuda) == "inductor"
    assert compiling.resolve("off", cuda) is None and compiling.resolve("aot_eager", cpu) == "aot_eager"
    with pytest.raises(ValueError, match="compile"):
        compiling.resolve("max", cpu)


@pytest.mark.parametrize("case", list(CASES))
def test_compiled_step_matches_uncompiled(case):
    off, on = make(CASES[case], "off"), make(CASES[case], "aot_eager")
    assert off.compile is None and on.compile == "aot_eager"
    calls = {}
    for name, fn in list(on.model._compiled.items()):  # count which compiled parts run
        def counted(*a, _fn=fn, _n=name):
            calls[_n] = calls.get(_n, 0) + 1
            return _fn(*a)
        on.model._compiled[name] = counted
    lo = torch.stack([off.train_step(s) for s in range(1, 13)])
    ln = torch.stack([on.train_step(s) for s in range(1, 13)])
    torch.testing.assert_close(ln, lo, rtol=1e-5, atol=1e-6)
    for (n, p), (_, q) in zip(off.model.named_parameters(), on.model.named_parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-6, msg=n)
    # compiled pieces split at the hooked taps only: the whole tail in one when none is hooked
    want = {"surprise_hooks": {"_medium", "_rest"}, "surprise_slow_ref": {"_medium", "_slow", "_out"}}
    assert set(calls) == {"_embed"} | want.get(case, {"_tail"}) and all(v >= 12 for v in calls.values())
    assert on.loss_fn is not fp32_cross_entropy  # the loss is the compiled one


def test_pieces_equal_the_formula():
    torch.manual_seed(0)
    m = NestedLSTM(20, d_model=16, d_ff=24, zero_init_ffn_out=False).double()
    x = torch.randint(0, 20, (3, 7))
    logits, _ = m(x)
    h1, _ = m.lstm(m.embed(x))
    h2 = h1 + m.ffn_medium.fc2(torch.nn.functional.gelu(m.ffn_medium.fc1(m.norm_medium(h1))))
    h3 = h2 + m.ffn_slow.fc2(torch.nn.functional.gelu(m.ffn_slow.fc1(m.norm_slow(h2))))
    torch.testing.assert_close(logits, m.head(m.norm_out(h3)), rtol=1e-12, atol=1e-12)
    m.tap_fn = lambda name, y: y.view_as(y)  # every tap hooked: the piecewise route, same values
    torch.testing.assert_close(m(x)[0], logits, rtol=1e-12, atol=1e-12)
    m.tap_names = frozenset({"medium"})  # only the medium tap hooked: medium, then the rest fused
    assert m.hooked("medium") and not m.hooked("slow")
    torch.testing.assert_close(m(x)[0], logits, rtol=1e-12, atol=1e-12)


def test_invalid_compile_settings_name_the_field():
    with pytest.raises(ValueError, match="compile"):
        apply_overrides(preset("smoke"), ["compile=max"])
    with pytest.raises(ValueError, match="compile.*delta"):
        apply_overrides(preset("smoke"), ["compile=aot_eager", "cuda_graph=off", "cms.levels.medium.optimizer=delta"])
    t = Trainer(apply_overrides(preset("smoke"), BASE + ["steps=2", "cuda_graph=off",
                                                         "cms.levels.medium.optimizer=delta"]), None, progress=False)
    assert t.compile is None  # "auto" with a delta optimizer: nothing compiled


def test_change_norm_recorded_on_the_last_update_before_each_log():
    lin = torch.nn.Linear(2, 2)
    cfg = CMSConfig(levels=(LevelConfig("fast", 1, "sgd", 0.1), LevelConfig("slow", 3, "sgd", 0.1)))
    cms = CMS(cfg, {"fast": [("weight", lin.weight)], "slow": [("bias", lin.bias)]}, change_every=4)
    for step in range(1, 13):
        lin(torch.ones(1, 2)).sum().backward()
        cms.after_backward(step)
    tele = cms.drain_telemetry()
    assert [s for s, _ in tele["fast"]["change_norms"]] == [4, 8, 12]
    assert [s for s, _ in tele["slow"]["change_norms"]] == [3, 6, 12]  # the last update before 4, 8, 12
    assert [s for s, _ in tele["fast"]["grad_norms"]] == list(range(1, 13))  # gradient norms: every update
    with pytest.raises(ValueError, match="change_every"):
        CMS(cfg, {"fast": [("weight", lin.weight)], "slow": [("bias", lin.bias)]}, change_every=0)
