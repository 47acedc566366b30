"""Run directories never lose or falsify a result: each test is one way a run used to go wrong."""

from __future__ import annotations

import json

import pytest
import torch

from nlcore.config import apply_overrides, preset
from nlcore.errors import CheckpointError, DataError, NonFiniteError, RunDirError
from nlcore.training import checkpoint as ckpt
from nlcore.training import rundir
from nlcore.training.trainer import Trainer

FAST = ["steps=24", "ckpt_every=8", "log_every=4", "eval_every=12", "eval_windows=2",
        "data.synth_chars=20000", "data.batch_size=4", "data.seq_len=16"]


def small(*extra):
    return apply_overrides(preset("smoke"), FAST + list(extra))


def read(path):
    return json.loads(path.read_text())


def corpus_folder(tmp_path, train="the cat sat on the mat. " * 400):
    folder = tmp_path / "corpus"
    folder.mkdir(exist_ok=True)
    for split, text in (("train", train), ("valid", "the mat sat on the cat. " * 40), ("test", "a cat. " * 80)):
        (folder / f"{split}.txt").write_text(text)
    return folder


def test_a_huge_training_loss_still_writes_the_summary(tmp_path):
    # exp(train loss) overflows a float; the run finishes and records the perplexity as null (inf)
    s = Trainer(small("cms.levels.fast.lr=1e3"), tmp_path, progress=False).run()
    summary = read(tmp_path / "summary.json")
    assert summary["status"] == "finished" and summary["valid_bpc"] == s["valid_bpc"]
    assert summary["train_loss_last100"] > 709 and summary["train_ppl_last100"] is None
    assert read(tmp_path / "meta.json")["status"] == "finished"


def test_resume_near_the_end_keeps_the_training_statistics(tmp_path):
    cfg = small()
    straight = Trainer(cfg, tmp_path / "a", progress=False).run()
    assert Trainer(cfg, tmp_path / "b", progress=False).run(stop_after=21) == {"stopped_at": 21}
    resumed = Trainer(cfg, tmp_path / "b", progress=False).run(resume=True)
    for key in ("train_loss_last100", "train_ppl_last100", "final_lr", "valid_bpc", "test_bpc"):
        assert resumed[key] == straight[key], key
    assert read(tmp_path / "b" / "meta.json")["resumed_at_step"] == 16


def test_resume_of_a_finished_run_changes_nothing(tmp_path):
    Trainer(small(), tmp_path, progress=False).run()
    before = (tmp_path / "summary.json").read_bytes()
    again = Trainer(small(), tmp_path, progress=False).run(resume=True)
    assert (tmp_path / "summary.json").read_bytes() == before and again == json.loads(before)


def test_divergence_keeps_a_finite_checkpoint_and_names_step_and_level(tmp_path):
    t = Trainer(small(), tmp_path, progress=False)
    opt = t.cms.optimizers["slow"]
    step = opt.step

    def overflowing_step(*a, **kw):  # the slow level's first update (step 16) makes a weight inf
        out = step(*a, **kw)
        with torch.no_grad():
            t.cms.params["slow"][0].view(-1)[0] = float("inf")
        return out

    opt.step = overflowing_step
    with pytest.raises(NonFiniteError, match="level 'slow'.*step 16") as e:
        t.run()
    assert (e.value.step, e.value.level) == (16, "slow")
    kept = ckpt.load(tmp_path / "checkpoint.pt")
    assert kept["step"] == 8 and all(torch.isfinite(v).all() for v in kept["model"].values())
    summary = read(tmp_path / "summary.json")
    assert summary["status"] == "diverged" and summary["ended_at_step"] == 16 and summary["level"] == "slow"


def test_inf_is_a_config_error():
    with pytest.raises(ValueError, match="cms.levels.slow.lr: must be a finite number"):
        small("cms.levels.slow.lr=inf")


def test_meta_json_exists_from_the_first_step(tmp_path):
    Trainer(small(), tmp_path, progress=False).run(stop_after=3)  # as if killed at step 3
    meta = read(tmp_path / "meta.json")
    assert meta["status"] == "running" and meta["config"]["steps"] == 24 and meta["command"]
    assert "revision" in meta["git"] and not (tmp_path / "summary.json").exists()


def test_an_existing_run_is_never_silently_overwritten(tmp_path):
    Trainer(small(), tmp_path, progress=False).run()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(RunDirError, match="already holds a run.*--resume.*--overwrite"):
        Trainer(small("seed=1"), tmp_path, progress=False).run()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    s = Trainer(small("seed=1"), tmp_path, progress=False).run(overwrite=True)
    assert read(tmp_path / "summary.json")["seed"] == 1 == s["seed"]


def test_resume_without_a_checkpoint_is_an_error(tmp_path):
    with pytest.raises(RunDirError, match="nothing to resume"):
        Trainer(small(), tmp_path / "empty", progress=False).run(resume=True)
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunDirError, match="is a file"):
        rundir.prepare(tmp_path / "f", resume=False, overwrite=False)


def test_a_killed_checkpoint_write_leaves_nothing_behind(tmp_path):
    t = Trainer(small(), tmp_path, progress=False)
    t.run(stop_after=9)
    stray = tmp_path / "checkpoint.pt.k1ll3d.tmp"
    stray.write_bytes(b"half a checkpoint")
    Trainer(small(), tmp_path, progress=False).run(resume=True)
    assert not stray.exists()


def test_checkpoints_load_weights_only(tmp_path):
    Trainer(small("surprise.weights.fast=0.1", "cms.levels.medium.optimizer=delta"), tmp_path, progress=False).run()
    payload = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert payload["step"] == 24


def test_a_corrupt_checkpoint_is_named(tmp_path):
    Trainer(small(), tmp_path, progress=False).run(stop_after=9)
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=f"cannot read checkpoint {tmp_path / 'checkpoint.pt'}"):
        Trainer(small(), tmp_path, progress=False).run(resume=True)


def test_resume_with_other_settings_names_them(tmp_path):
    Trainer(small(), tmp_path, progress=False).run(stop_after=9)
    with pytest.raises(CheckpointError, match="other settings.*cms.levels.slow.lr"):
        Trainer(small("cms.levels.slow.lr=0.5"), tmp_path, progress=False).run(resume=True)


def test_meta_records_the_data_files_and_a_resume_checks_them(tmp_path):
    folder = corpus_folder(tmp_path)
    cfg = small(f"data.corpus={folder}", "data.batch_size=2")
    Trainer(cfg, tmp_path / "run", progress=False).run(stop_after=9)
    files = read(tmp_path / "run" / "meta.json")["data_files"]
    assert [f["path"] for f in files] == [str((folder / f"{s}.txt").resolve()) for s in ("train", "valid", "test")]
    assert files[0]["sha256"] == rundir.sha256(folder / "train.txt") and files[0]["bytes"] > 0
    from nlcore.data import clear_cache

    (folder / "train.txt").write_text("the mat sat on the cat. " * 400)  # same characters, other text
    clear_cache()
    with pytest.raises(DataError, match="the data changed.*train.txt"):
        Trainer(cfg, tmp_path / "run", progress=False).run(resume=True)
    (folder / "train.txt").write_text("the dog sat on the log! " * 400)  # another vocabulary
    clear_cache()
    with pytest.raises(DataError, match="another vocabulary"):
        Trainer(cfg, tmp_path / "run", progress=False).run(resume=True)


def test_a_wrong_data_root_is_an_error_not_a_fallback(tmp_path, monkeypatch):
    from nlcore.data import CorpusNotFoundError, clear_cache, load_corpus

    monkeypatch.setenv("NLCORE_DATA", str(tmp_path / "nowhere"))
    clear_cache()
    with pytest.raises(CorpusNotFoundError, match=f"looked in: {tmp_path / 'nowhere'}/wikitext-2; "):
        load_corpus("wikitext2")


def test_a_non_finite_evaluation_is_named_in_the_summary_and_warned(tmp_path, monkeypatch, capsys):
    from nlcore.cli import main

    real = Trainer.evaluate

    def diverging(self, split, *a, **kw):  # the model blows up on held-out text
        out = real(self, split, *a, **kw)
        return {**out, "bpc": float("nan")} if split == "test" else out

    monkeypatch.setattr(Trainer, "evaluate", diverging)
    s = Trainer(small(), tmp_path / "a", progress=False).run()
    assert s["status"] == "finished" and s["non_finite_evaluation"] == ["test_bpc"]
    assert read(tmp_path / "a" / "summary.json")["test_bpc"] is None
    args = ["train", "--preset", "smoke", "--out", str(tmp_path / "b"), "--no-progress"]
    assert main(args + [x for f in FAST for x in ("--set", f)]) == 0
    err = capsys.readouterr().err
    assert "warning: training finished, but test_bpc is not finite" in err


def test_sigterm_stops_at_the_next_logged_step_with_a_checkpoint_and_resume_matches(tmp_path):
    import os
    import signal

    from nlcore.errors import StoppedError

    cfg = small()
    straight = Trainer(cfg, tmp_path / "a", progress=False).run()
    t = Trainer(cfg, tmp_path / "b", progress=False)
    t.after_step = lambda tr: os.kill(os.getpid(), signal.SIGTERM) if tr.step == 5 else None
    with pytest.raises(StoppedError, match="SIGTERM at step 8 of 24.*--resume"):
        t.run()  # log_every=4: the request at step 5 stops at step 8, whose finite checks passed
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone with the run
    summary = read(tmp_path / "b" / "summary.json")
    assert summary["status"] == "stopped" and summary["ended_at_step"] == 8
    assert ckpt.load(tmp_path / "b" / "checkpoint.pt")["step"] == 8 and rundir.status(tmp_path / "b") == "stopped"
    resumed = Trainer(cfg, tmp_path / "b", progress=False).run(resume=True)
    for key in ("train_loss_last100", "final_lr", "valid_bpc", "test_bpc"):
        assert resumed[key] == straight[key], key
