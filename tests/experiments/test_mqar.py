"""MQAR: the generator's invariants, the accuracy metric against an oracle and a constant
predictor, training against a plain-torch reference, and a smoke training run through the API
and the CLI."""

from __future__ import annotations

import inspect
import json
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from nlcore import repro
from nlcore.data.mqar import IGNORE, MQARSpec, generate, held_out, split_generator
from nlcore.experiments.mqar import (
    MQARConfig,
    evaluate,
    pairs_for,
    preset,
    query_accuracy,
    query_hits,
    run_mqar,
    run_mqar_grid,
    smoke,
)
from nlcore.models import build_model
from nlcore.training.schedule import lr_multiplier

SPEC = MQARSpec(seq_len=64, n_pairs=8, n_keys=20, n_values=10, n_noise=3)


def _batch(spec=SPEC, b=32, seed=0):
    return generate(spec, b, split_generator(seed, "train"))


def test_generator_shapes_ranges_and_layout():
    x, y = _batch()
    P, L = SPEC.n_pairs, SPEC.seq_len
    assert x.shape == y.shape == (32, L) and x.dtype == y.dtype == torch.long
    assert SPEC.vocab_size == 33 and int(x.min()) >= 0 and int(x.max()) < SPEC.vocab_size
    keys, values = x[:, 0:2 * P:2], x[:, 1:2 * P:2]  # (B, P) context
    assert (keys < SPEC.n_keys).all()
    assert ((values >= SPEC.value_offset) & (values < SPEC.noise_offset)).all()
    assert (y[:, :2 * P] == IGNORE).all()  # no target inside the context
    assert ((y != IGNORE).sum(1) == P).all()  # exactly P queries per row
    for k in keys:  # distinct keys within a row
        assert k.unique().numel() == P
    tail = x[:, 2 * P:]  # query region: P keys, P values, the rest filler
    assert ((tail < SPEC.n_keys).sum(1) == P).all()
    assert ((tail >= SPEC.noise_offset).sum(1) == L - 4 * P).all()


def test_every_query_targets_the_value_paired_earlier():
    x, y = _batch(b=16)
    P = SPEC.n_pairs
    for b in range(x.shape[0]):
        pairs = dict(zip(x[b, 0:2 * P:2].tolist(), x[b, 1:2 * P:2].tolist()))
        qpos = (y[b] != IGNORE).nonzero().flatten().tolist()
        assert sorted(x[b, qpos].tolist()) == sorted(pairs)  # each key queried exactly once
        for t in qpos:
            assert t >= 2 * P
            assert y[b, t].item() == pairs[x[b, t].item()]  # target: the paired value
            assert x[b, t + 1].item() == pairs[x[b, t].item()]  # next input: the value itself


def test_tight_length_and_single_filler():
    spec = MQARSpec(seq_len=16, n_pairs=4, n_keys=4, n_values=5, n_noise=1)  # L = 4P: no filler
    x, y = _batch(spec, b=8)
    assert ((y != IGNORE).sum(1) == 4).all() and (x < spec.noise_offset).all()
    x, _ = _batch(MQARSpec(seq_len=24, n_pairs=4, n_keys=4, n_values=5, n_noise=1))
    assert ((x == 9).sum(1) == 8).all()  # the one filler id fills L - 4P positions


def test_determinism_and_seed_and_split_independence():
    a, b, c = _batch(seed=0), _batch(seed=0), _batch(seed=1)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)
    t0, t1 = held_out(SPEC, 40, seed=0), held_out(SPEC, 40, seed=0)
    assert torch.equal(t0.x, t1.x) and t0.x.shape == (40, 64)
    assert not torch.equal(t0.x[:32], a.x)  # test rows differ from the seed's train rows
    chunked = held_out(SPEC, 40, seed=0, chunk=16)  # chunking only changes how it is drawn ...
    assert chunked.x.shape == (40, 64) and ((chunked.y != IGNORE).sum(1) == 8).all()
    g = split_generator(0, "train")
    first, second = generate(SPEC, 4, g), generate(SPEC, 4, g)  # ... and batches are fresh
    assert not torch.equal(first.x, second.x)


@pytest.mark.parametrize("kwargs, field", [
    (dict(seq_len=0), "seq_len"), (dict(n_pairs=0), "n_pairs"), (dict(n_values=0), "n_values"),
    (dict(n_noise=0), "n_noise"), (dict(n_keys=4, n_pairs=8), "n_keys"),
    (dict(seq_len=31, n_pairs=8), "seq_len"), (dict(n_keys=2.5), "n_keys"),
])
def test_spec_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"^{field}:"):
        MQARSpec(**{**dict(seq_len=64, n_pairs=8, n_keys=20, n_values=10), **kwargs})


def test_argument_validation():
    with pytest.raises(ValueError, match="^batch_size:"):
        generate(SPEC, 0, split_generator(0, "train"))
    with pytest.raises(ValueError, match="^split:"):
        split_generator(0, "valid")
    with pytest.raises(ValueError, match="^seed:"):
        split_generator(-1, "train")
    with pytest.raises(ValueError, match="^n_sequences:"):
        held_out(SPEC, 0, seed=0)


def _oracle_logits(x: torch.Tensor, spec: MQARSpec) -> torch.Tensor:
    """A lookup 'model': at each position, one-hot on the value last paired with the current token
    (read from the context); zeros where the token is no key of the context."""
    B, L = x.shape
    P = spec.n_pairs
    logits = torch.zeros(B, L, spec.vocab_size)
    for b in range(B):
        table = dict(zip(x[b, 0:2 * P:2].tolist(), x[b, 1:2 * P:2].tolist()))
        for t in range(2 * P, L):
            v = table.get(x[b, t].item())
            if v is not None:
                logits[b, t, v] = 1.0
    return logits


def test_oracle_scores_one_and_constant_predictor_scores_chance():
    spec = MQARSpec(seq_len=64, n_pairs=8, n_keys=20, n_values=10)
    x, y = held_out(spec, 600, seed=3)
    assert query_accuracy(_oracle_logits(x, spec), y) == 1.0
    const = torch.zeros(*x.shape, spec.vocab_size)
    const[..., spec.value_offset] = 1.0  # always the first value id
    acc = query_accuracy(const, y)
    assert abs(acc - 1 / spec.n_values) < 0.02  # 4800 queries: sd ~ 0.004
    c, n = query_hits(const, y)
    assert n.item() == 600 * 8 and c.item() == round(acc * n.item())
    assert query_accuracy(torch.zeros_like(const), y) == pytest.approx(0.0)  # ties -> id 0, a key


def test_config_presets_and_validation():
    s = smoke()
    assert s.validate() is s and s.device == "cpu" and s.amp == "off"
    d = MQARConfig().validate()  # the defaults: the small model at L = 256, 16 pairs
    assert (d.model.d_model, d.model.n_layers, d.model.n_heads, d.seq_len, d.n_pairs) == (128, 2, 2, 256, 16)
    cfg = preset("smoke", "nested_lstm", ["model.d_model=48", "lr=1e-3", "n_pairs=2"])
    assert cfg.model.kind == "nested_lstm" and cfg.model.d_model == 48 and cfg.lr == 1e-3 and cfg.n_pairs == 2
    full = preset("full")
    assert (full.seq_len, full.n_pairs, full.model.d_model, full.model.n_layers) == (256, 16, 128, 2)
    for key, field in [("steps=0", "steps"), ("lr=0", "lr"), ("amp=fp16", "amp"), ("warmup=100", "warmup"),
                       ("n_pairs=17", "seq_len"), ("model.n_heads=3", "model.n_heads")]:
        with pytest.raises(ValueError, match=rf"^{field}:"):
            preset("smoke", "lstm_lm", [key])
    with pytest.raises(ValueError, match="^mode:"):
        preset("medium")
    with pytest.raises(KeyError, match="unknown key"):
        preset("smoke", "lstm_lm", ["nope=1"])
    assert pairs_for(1024, "scale", 16) == 64 and pairs_for(512, None, 16) == 16 and pairs_for(512, 8, 16) == 8


def test_ignore_is_the_cross_entropy_ignore_index():
    # the trainer's loss (fp32_cross_entropy) takes F.cross_entropy's default: targets IGNORE drop out
    assert inspect.signature(F.cross_entropy).parameters["ignore_index"].default == IGNORE


def _reference(cfg: MQARConfig) -> tuple[list[float], float]:
    """MQAR training in plain torch, the definition run_mqar implements: AdamW (decay on the
    matrices), the cosine schedule, torch's global-norm clip, cross-entropy at the queries.
    Returns (loss per step, test accuracy)."""
    spec = cfg.spec()
    repro.seed_everything(cfg.seed)
    model = build_model(cfg.model, spec.vocab_size)
    groups = [{"params": [p for p in model.parameters() if p.ndim >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in model.parameters() if p.ndim < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98))
    mult, g, losses = lr_multiplier("cosine", cfg.steps, cfg.warmup, cfg.min_lr_ratio), split_generator(cfg.seed, "train"), []
    for step in range(1, cfg.steps + 1):
        x, y = generate(spec, cfg.batch_size, g)
        logits, _ = model(x, model.init_state(cfg.batch_size, "cpu"))
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        for group in opt.param_groups:
            group["lr"] = cfg.lr * mult(step)
        opt.step()
        losses.append(loss.item())
    test = held_out(spec, cfg.eval_sequences, cfg.seed)
    acc = evaluate(model, test, batch_size=cfg.batch_size, device=torch.device("cpu"), amp=False)["accuracy"]
    return losses, acc


@pytest.mark.parametrize("kind", ["lstm_lm", "transformer"])
def test_training_equals_the_plain_torch_reference_bit_for_bit(kind):
    cfg = replace(smoke(kind), steps=8, warmup=2, log_every=1, batch_size=4, grad_clip=0.05, eval_sequences=32)
    s = run_mqar(cfg, progress=False)
    losses, acc = _reference(cfg)
    assert [h["train_loss"] for h in s["history"]] == losses  # the clip at 0.05 acts on every step
    assert s["accuracy"] == acc


def test_smoke_run_lstm_writes_summary_and_meta(tmp_out):
    cfg = replace(smoke("lstm_lm"), steps=30)
    s = run_mqar(cfg, tmp_out / "run", progress=False, command="test")
    assert math.isfinite(s["train_loss"]) and 0.0 <= s["accuracy"] <= 1.0
    assert s["steps"] == 30 and s["test_queries"] == cfg.eval_sequences * cfg.n_pairs
    assert s["diverged_at_step"] is None and s["params"] > 0 and s["chars_per_s"] > 0
    assert s["history"][0]["train_loss"] > s["history"][-1]["train_loss"]  # it learns something
    summary = json.loads((tmp_out / "run" / "summary.json").read_text())
    meta = json.loads((tmp_out / "run" / "meta.json").read_text())
    for k in ("accuracy", "train_loss", "steps", "wall_time_s", "chars_per_s", "params", "config"):
        assert k in summary
    assert summary["config"]["model"]["kind"] == "lstm_lm"
    assert meta["command"] == "test" and meta["device"] == "cpu" and "revision" in meta["git"]
    again = run_mqar(cfg, progress=False)  # same seed, same numbers
    assert again["accuracy"] == s["accuracy"] and again["train_loss"] == s["train_loss"]


def test_grid_skips_finished_runs_and_writes_runs_csv(tmp_out):
    base = replace(smoke(), steps=4, warmup=1, log_every=2, eval_sequences=16, batch_size=4)
    models = {"lstm": replace(base.model, kind="lstm_lm"), "nested": replace(base.model, kind="nested_lstm")}
    runs = run_mqar_grid(models, [32, 64], [0], tmp_out, base=base, n_pairs="scale", echo=False)
    acc = runs[runs.metric == "accuracy"]
    assert len(acc) == 4 and set(acc.config) == {"lstm", "nested"} and set(acc.n_pairs) == {2, 4}
    csv = (tmp_out / "runs.csv").read_text().splitlines()
    assert csv[0].split(",")[:3] == ["config", "seq_len", "n_pairs"]
    assert (tmp_out / "summary.json").exists() and (tmp_out / "meta.json").exists()
    done = tmp_out / "runs" / "lstm" / "L32" / "seed0" / "summary.json"
    stamp = done.stat().st_mtime_ns
    again = run_mqar_grid(models, [32, 64], [0], tmp_out, base=base, n_pairs="scale", echo=False)
    assert done.stat().st_mtime_ns == stamp and again.equals(runs)  # nothing re-run
    with pytest.raises(ValueError, match="^out_root:"):  # a finished run of another config
        run_mqar_grid(models, [32], [0], tmp_out, base=replace(base, lr=1e-4), n_pairs="scale", echo=False)


def test_cli_mqar(tmp_out, capsys):
    from nlcore.cli import main

    rc = main(["mqar", "--model-kind", "lstm_lm", "--seq-len", "32", "--seeds", "0", "1", "--out", str(tmp_out),
               "--set", "steps=3", "--set", "warmup=1", "--set", "eval_sequences=8", "--set", "n_pairs=2",
               "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "lstm_lm L=32" in out and "(n=2)" in out
    assert (tmp_out / "runs" / "lstm_lm" / "L32" / "seed1" / "meta.json").exists()
    assert main(["mqar", "--out", str(tmp_out), "--n-pairs", "many"]) == 2
