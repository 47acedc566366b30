"""Dynamic evaluation (nlcore.training.dynamic_eval): lr = 0 is static evaluation, each window is scored
before its own update, the update is θ_w − lr ∇L_w(θ_w) + decay (θ_0 − θ_w), the caller's model
is untouched, and the trainer reports valid/test_bpc_dynamic."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from nlcore.config import StateConfig, apply_overrides, preset
from nlcore.state import detach
from nlcore.training.dynamic_eval import dynamic_evaluate
from nlcore.training.evaluate import evaluate
from nlcore.training.trainer import Trainer

BASE = ["data.synth_chars=20000", "eval_every=0", "ckpt_every=0", "log_every=10"]
KINDS = {
    "nested_lstm": ["state.reset=doc"],  # document resets inside windows (synthetic episodes)
    "transformer": ["model.kind=transformer", "model.n_layers=1", "model.n_heads=2"],
    "hope": ["model.kind=hope", "model.n_layers=1", "model.n_heads=2", "model.mem_chunk=8",
             "model.cms_chunks=16,32"],  # uses_targets; writes its fast weights inside the forward
}


def trainer(*extra, steps=10, out=None):
    return Trainer(apply_overrides(preset("smoke"), BASE + [f"steps={steps}", *extra]), out, progress=False)


def snapshot(model):
    return {n: (p.detach().clone(), None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()}


def windows_losses(model, stream, lr, decay, n):
    """The reference: per window, score with θ_w (mean CE), then step (float64, reset=never)."""
    import copy

    m = copy.deepcopy(model).eval()
    params = [p for p in m.parameters() if p.requires_grad]
    theta0 = [p.detach().clone() for p in params]
    state, losses = m.init_state(stream.batch_size, "cpu"), []
    for i in range(n):
        b = stream[i]
        logits, new = m(b.x, state)
        loss = F.cross_entropy(logits.flatten(0, 1), b.y.flatten())  # L_w(θ_w)
        losses.append(loss.item())
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g, p0 in zip(params, grads, theta0):
                p.copy_(p - lr * g + decay * (p0 - p))
        state = detach(new)
    return losses, m


@pytest.mark.parametrize("kind", list(KINDS))
def test_lr_zero_is_static_evaluation(kind):
    t = trainer(*KINDS[kind])
    windows = 3 if kind == "hope" else None
    if kind == "nested_lstm":  # float32 CPU LSTM kernels differ with and without autograd: float64
        t.model.double()
    stream, cuts = t.eval_streams["valid"]
    st = evaluate(t.model, stream, t.cfg.state, device="cpu", doc_cuts=cuts, max_windows=windows)
    dy = dynamic_evaluate(t.model, stream, t.cfg.state, lr=0.0, decay=0.5, device="cpu", doc_cuts=cuts,
                          max_windows=windows)
    assert dy["targets"] == st["targets"] and dy["windows"] == st["windows"]
    if kind == "nested_lstm":
        assert abs(dy["bpc"] - st["bpc"]) < 1e-12
    else:
        assert dy["bpc"] == st["bpc"]  # float32, bit-identical


def test_each_window_is_scored_before_its_own_update():
    t = trainer("model.kind=transformer", "model.n_layers=1", "model.n_heads=2", "state.reset=never")
    t.model.double()
    stream, _ = t.eval_streams["valid"]
    lr, decay = 0.5, 0.1
    ref, _ = windows_losses(t.model, stream, lr, decay, 3)
    nats = []  # window w's summed nats, from the running totals of 1, 2, 3 windows
    for k in (1, 2, 3):
        d = dynamic_evaluate(t.model, stream, StateConfig("never"), lr=lr, decay=decay, device="cpu", max_windows=k)
        nats.append(d["nats"] * d["targets"])
    per_window = [nats[0], nats[1] - nats[0], nats[2] - nats[1]]
    n_w = stream.batch_size * stream.seq_len
    for got, want in zip(per_window, ref):
        assert abs(got / n_w - want) < 1e-10, (got / n_w, want)
    static = evaluate(t.model, stream, StateConfig("never"), device="cpu", max_windows=1)
    assert abs(static["nats"] - ref[0]) < 1e-12 and abs(nats[0] / n_w - ref[0]) < 1e-12  # θ_0 scores window 0
    assert ref[1] != evaluate(t.model, stream, StateConfig("never"), device="cpu", max_windows=2)["nats"] * 2 - ref[0]


def test_update_is_sgd_with_decay_toward_the_trained_weights():
    t = trainer("state.reset=never")
    t.model.double()
    stream, _ = t.eval_streams["valid"]
    lr, decay = 0.3, 0.2
    d = dynamic_evaluate(t.model, stream, StateConfig("never"), lr=lr, decay=decay, device="cpu",
                         max_windows=2, return_model=True)
    _, ref = windows_losses(t.model, stream, lr, decay, 2)  # θ_2, with the state carried
    theta0 = dict(t.model.named_parameters())
    for (name, p), q in zip(d["model"].named_parameters(), ref.parameters()):
        assert torch.allclose(p, q, rtol=0, atol=1e-12), name
        assert not torch.equal(p, theta0[name]), name  # every parameter moved


def test_the_callers_model_hooks_and_grads_are_untouched():
    t = trainer()
    model = t.model
    b = t.train_stream[0]
    logits, _ = model(b.x)
    F.cross_entropy(logits.flatten(0, 1), b.y.flatten()).backward()  # pending .grad on the caller
    calls = []
    handle = model.head.register_forward_hook(lambda *a: calls.append(1))
    model.train()
    before = snapshot(model)
    stream, cuts = t.eval_streams["valid"]
    d = dynamic_evaluate(model, stream, t.cfg.state, lr=1.0, decay=0.1, device="cpu", doc_cuts=cuts,
                         return_model=True)
    assert calls == []  # the caller's hooks are not copied onto the adapted twin
    assert model.training
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n][0]) and torch.equal(p.grad, before[n][1]), n
    assert any(not torch.equal(p, before[n][0]) for n, p in d["model"].named_parameters())
    model(b.x)
    assert calls == [1]  # still on the caller
    handle.remove()


def test_dynamic_eval_beats_static_on_the_synthetic_corpus():
    t = trainer("state.reset=never", steps=30)  # briefly trained: window by window, it keeps learning
    t.run()
    stream, cuts = t.eval_streams["valid"]
    st = evaluate(t.model, stream, t.cfg.state, device="cpu", doc_cuts=cuts)
    dy = dynamic_evaluate(t.model, stream, t.cfg.state, lr=0.1, device="cpu", doc_cuts=cuts)
    assert dy["bpc"] < st["bpc"] - 0.01, (dy["bpc"], st["bpc"])


@pytest.mark.parametrize("key,value,match", [
    ("dynamic_eval_lr", "-0.1", "dynamic_eval_lr: must be >= 0"),
    ("dynamic_eval_decay", "1.0", r"dynamic_eval_decay: must be in \[0, 1\)"),
    ("dynamic_eval_decay", "-0.5", r"dynamic_eval_decay: must be in \[0, 1\)"),
])
def test_config_errors_name_the_field(key, value, match):
    with pytest.raises(ValueError, match=match):
        apply_overrides(preset("smoke"), [f"{key}={value}"])


def test_function_rejects_bad_arguments():
    t = trainer()
    stream, _ = t.eval_streams["valid"]
    with pytest.raises(ValueError, match="dynamic_eval_lr"):
        dynamic_evaluate(t.model, stream, t.cfg.state, lr=-1.0, device="cpu")
    with pytest.raises(ValueError, match="dynamic_eval_decay"):
        dynamic_evaluate(t.model, stream, t.cfg.state, lr=0.1, decay=1.0, device="cpu")


def test_trainer_reports_dynamic_bpc_beside_the_static_numbers(tmp_path):
    plain = trainer(out=tmp_path / "plain").run()
    assert "valid_bpc_dynamic" not in plain
    t = trainer("dynamic_eval_lr=0.1", "dynamic_eval_decay=0.01", out=tmp_path / "dyn")
    s = t.run()
    on_disk = json.loads((tmp_path / "dyn" / "summary.json").read_text())
    for key in ("valid_bpc_dynamic", "test_bpc_dynamic"):
        assert key in on_disk and 0 < on_disk[key] < 8 and on_disk[key] == s[key]
    assert s["valid_bpc"] == plain["valid_bpc"] and s["test_bpc"] == plain["test_bpc"]  # static: unchanged
    stream, cuts = t.eval_streams["valid"]
    d = dynamic_evaluate(t.model, stream, t.cfg.state, lr=0.1, decay=0.01, device="cpu", doc_cuts=cuts)
    assert d["bpc"] == s["valid_bpc_dynamic"]  # whole split, the run's protocol
    # eval-only fields: a finished run's checkpoint resumes under another dynamic_eval_lr
    again = trainer("dynamic_eval_lr=0.2", out=tmp_path / "plain")
    again.load_checkpoint(tmp_path / "plain" / "checkpoint.pt")
    assert again.step == 10


def test_rnn_modules_alone_train_during_adaptation():
    """cuDNN computes an RNN's backward only in training mode: the adapted copy's LSTM trains,
    every other module stays in eval mode (no dropout); lr 0 needs no backward and stays eval."""
    t = trainer("model.dropout=0.1")
    stream, cuts = t.eval_streams["valid"]
    for lr, rnn_mode in ((0.1, True), (0.0, False)):
        twin = dynamic_evaluate(t.model, stream, t.cfg.state, lr=lr, device="cpu", doc_cuts=cuts, max_windows=1,
                                return_model=True)["model"]
        assert twin.lstm.training is rnn_mode
        assert not any(m.training for m in twin.modules() if not isinstance(m, torch.nn.RNNBase))
