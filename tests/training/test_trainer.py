"""The trainer: exact resume, clear errors, non-finite stops, outputs and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from nlcore.cms import NonFiniteError
from nlcore.config import apply_overrides, preset
from nlcore.paths import REPO_ROOT
from nlcore.training import checkpoint as ckpt
from nlcore.training.trainer import Trainer

FAST = ["steps=24", "ckpt_every=8", "log_every=4", "eval_every=12", "eval_windows=2",
        "data.synth_chars=20000", "data.batch_size=4", "data.seq_len=16"]


def small(*extra):
    return apply_overrides(preset("smoke"), FAST + list(extra))


def params_of(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("reset", ["never", "doc"])
def test_kill_and_resume_is_bit_identical(tmp_path, reset):
    cfg = small(f"state.reset={reset}", "model.dropout=0.1")
    straight = Trainer(cfg, tmp_path / "a", progress=False)
    s1 = straight.run()
    t = Trainer(cfg, tmp_path / "b", progress=False)
    assert t.run(stop_after=13) == {"stopped_at": 13}  # killed after step 13; last checkpoint at 8
    assert ckpt.load(tmp_path / "b" / "checkpoint.pt")["step"] == 8
    resumed = Trainer(cfg, tmp_path / "b", progress=False)
    s2 = resumed.run(resume=True)
    for k, v in params_of(straight).items():
        assert torch.equal(v, params_of(resumed)[k]), k
    assert s1["valid_bpc"] == s2["valid_bpc"] and s1["test_bpc"] == s2["test_bpc"]
    assert s1["updates_by_level"] == s2["updates_by_level"]
    lines = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [4, 8, 12, 16, 20, 24]
    assert [r["train_loss"] for r in lines] == [r["train_loss"] for r in straight.history]


def test_outputs_and_summary_keys(tmp_path):
    s = Trainer(small(), tmp_path, progress=False).run()
    for name in ("meta.json", "summary.json", "metrics.jsonl", "checkpoint.pt"):
        assert (tmp_path / name).exists(), name
    for key in ("valid_bpc", "test_bpc", "steps", "chars_per_s", "params_by_level", "updates_by_level"):
        assert key in s
    assert s["updates_by_level"] == {"fast": 24, "medium": 6, "slow": 2}  # 24 // 4, 24 // 16 + flushed 8
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["config"]["steps"] == 24 and "git" in json.dumps(meta)
    # held-out, not training loss: bpc counts every covered target of the split
    assert s["valid_targets"] > 0 and 0 < s["valid_bpc"] < 8


def test_batch_too_large_for_split_names_field():
    with pytest.raises(ValueError, match="batch_size"):
        Trainer(small("data.batch_size=5000"), None, progress=False)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    t = Trainer(small(), tmp_path, progress=False)
    forward = t.model.forward
    calls = {"n": 0}

    def poisoned(x, state=None, resets=None):
        calls["n"] += t.model.training  # count training steps only (evaluation also calls forward)
        logits, st = forward(x, state, resets)
        return (logits * float("nan") if calls["n"] == 18 and t.model.training else logits), st

    monkeypatch.setattr(t.model, "forward", poisoned)
    with pytest.raises(NonFiniteError, match="step 18"):
        t.run()
    assert ckpt.load(tmp_path / "checkpoint.pt")["step"] == 16
    good = ckpt.load(tmp_path / "checkpoint.pt")["model"]
    assert all(torch.isfinite(v).all() for v in good.values())


def test_prototype_compat_freezes_embedding_and_head():
    t = Trainer(apply_overrides(preset("smoke"), FAST + ["compat=prototype"]), None, progress=False)
    assert not t.model.embed.weight.requires_grad and not t.model.head.weight.requires_grad
    assert t.cms.specs["untrained"].optimizer == "none"
    before = t.model.embed.weight.detach().clone()
    t.run()
    assert torch.equal(before, t.model.embed.weight)


def test_cli_reports_unknown_key():
    r = subprocess.run([sys.executable, "-m", "nlcore", "train", "--preset", "smoke", "--out", "/tmp/x",
                        "--set", "cms.levels.turbo.lr=1"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "turbo" in r.stderr and "Traceback" not in r.stderr
