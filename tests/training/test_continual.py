"""The continual-learning probe: the joint tokenizer, phase B's start from phase A's exact state,
evaluation points that equal independent evaluations, forgetting and learning as differences of
the recorded numbers, the CLI's one-line errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from nlcore import cli
from nlcore.config import apply_overrides, preset
from nlcore.data import CharTokenizer, joint_tokenizer, load_corpus, prepare
from nlcore.errors import DataError, RunDirError
from nlcore.training import checkpoint as ckpt
from nlcore.training.continual import changes, eval_steps, phase_b_config, run_continual
from nlcore.training.evaluate import evaluate
from nlcore.training.trainer import Trainer, load_data, make_stream, model_for

TINY = ["steps=12", "ckpt_every=0", "log_every=4", "eval_every=0", "warmup=2", "data.synth_chars=20000",
        "data.batch_size=4", "data.seq_len=16"]
SET_B = ("data.synth_seed=1", "data.synth_gap_min=10", "data.synth_gap_max=20")


def folder(path, **texts):
    path.mkdir(parents=True)
    for split in ("train", "valid", "test"):
        (path / f"{split}.txt").write_text(texts[split], encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    """One probe run: 12 steps on synthetic corpus A, 8 on another synthetic corpus, 4 points."""
    out = tmp_path_factory.mktemp("probe") / "run"
    cfg_a = apply_overrides(preset("smoke"), TINY)
    summary = run_continual(cfg_a, 8, out, corpus_b="synthetic", eval_points=4, set_b=SET_B, progress=False)
    cfg_b = phase_b_config(cfg_a, "synthetic", 8, SET_B)
    tok = joint_tokenizer([load_data(cfg_a), load_data(cfg_b)])
    return out, cfg_a, cfg_b, tok, summary


def test_joint_tokenizer_covers_both_corpora_and_round_trips(tmp_path):
    a = folder(tmp_path / "a", train="abc abc\n", valid="cab\n", test="bca z\n")
    b = folder(tmp_path / "b", train="XYZ xyz!\n", valid="zyx Q\n", test="abc\n")
    tok = joint_tokenizer([load_corpus(str(a)), load_corpus(str(b))])
    assert tok.chars == tuple(sorted(set("abc abc\n") | set("XYZ xyz!\n")))
    assert joint_tokenizer([prepare(str(a)), prepare(str(b))]) == tok  # the same from each corpus' own vocabulary
    for name in (a, b):
        corpus = prepare(str(name), tokenizer=tok)
        assert corpus.tokenizer == tok
        for split in ("train", "valid", "test"):
            text = (name / f"{split}.txt").read_text(encoding="utf-8")
            assert torch.equal(corpus.ids[split], tok.encode(text))
            if tok.count_unknown(text) == 0:
                assert tok.decode(corpus.ids[split]) == text
    assert prepare(str(b), tokenizer=tok).stats["valid"]["unknown_chars"] == {"Q": 1}  # in no train split
    assert prepare(str(a), tokenizer=tok).stats["test"]["unknown"] == 0  # 'z' is in B's train split


def test_phase_b_starts_from_phase_a_exact_weights_and_optimizer_states(probe, tmp_path):
    out, cfg_a, cfg_b, tok, summary = probe
    plain = Trainer(cfg_a, tmp_path / "plain", progress=False, tokenizer=tok)
    s_plain = plain.run()
    b = Trainer(cfg_b, None, progress=False, tokenizer=tok)
    b.start_from(out / "phase_a" / "checkpoint.pt")
    for k, v in plain.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    for name, opt in plain.cms.optimizers.items():
        if opt is None:
            continue
        for sa, sb in zip(opt.state.values(), b.cms.optimizers[name].state.values()):
            for k, v in sa.items():
                assert torch.equal(torch.as_tensor(v), torch.as_tensor(sb[k])), (name, k)
    assert b.step == 0 and all(n == 0 for n in b.cms.updates.values())  # a new run: its own counters
    assert summary["points"][0]["a_valid_bpc"] == s_plain["valid_bpc"]  # point 0 is the plain run of A
    assert summary["points"][0]["a_test_bpc"] == s_plain["test_bpc"]


def test_start_from_refuses_another_vocabulary(probe):
    out, _, cfg_b, tok, _ = probe
    other = CharTokenizer(sorted({*tok.chars, "~"}))
    with pytest.raises(DataError, match="another vocabulary"):
        Trainer(cfg_b, None, progress=False, tokenizer=other).start_from(out / "phase_a" / "checkpoint.pt")


def test_points_equal_independent_evaluations_of_the_checkpointed_models(probe):
    out, cfg_a, cfg_b, tok, summary = probe
    d = cfg_a.data
    for point, phase in ((summary["points"][0], "phase_a"), (summary["points"][-1], "phase_b")):
        model = model_for(cfg_a, tok.vocab_size)
        model.load_state_dict(ckpt.load(out / phase / "checkpoint.pt")["model"])
        for key, cfg in (("a", cfg_a), ("b", cfg_b)):
            for split in ("valid", "test"):
                stream, cuts = make_stream(load_data(cfg, tok), split, d.batch_size, d.seq_len, "cpu")
                got = evaluate(model, stream, cfg.state, device=torch.device("cpu"), doc_cuts=cuts)["bpc"]
                assert got == point[f"{key}_{split}_bpc"], (phase, key, split)


def test_points_forgetting_and_learning_are_the_recorded_numbers(probe):
    out, _, _, _, summary = probe
    lines = [json.loads(x) for x in (out / "continual.jsonl").read_text().splitlines()]
    assert lines == summary["points"]
    assert [p["step_b"] for p in lines] == [0, *eval_steps(8, 4)] == [0, 2, 4, 6, 8]
    first, last = lines[0], lines[-1]
    assert summary["forgetting_bpc"] == last["a_valid_bpc"] - first["a_valid_bpc"]
    assert summary["learning_bpc"] == first["b_valid_bpc"] - last["b_valid_bpc"]
    assert summary["forgetting_test_bpc"] == last["a_test_bpc"] - first["a_test_bpc"]
    assert summary["a_valid_bpc_end"] == last["a_valid_bpc"] and summary["b_valid_bpc_after_a"] == first["b_valid_bpc"]
    assert summary["status"] == "finished" and summary["phase_b"]["valid_bpc"] == last["b_valid_bpc"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["status"] == "finished" and set(meta["config"]) == {"probe", "phase_a", "phase_b"}
    assert meta["config"]["phase_b"]["data"]["synth_seed"] == 1 and meta["tokenizer"]["vocab_size"] == summary["vocab_size"]
    made = {"a_valid_bpc": 2.0, "b_valid_bpc": 5.0}, {"a_valid_bpc": 2.5, "b_valid_bpc": 3.0}
    assert changes(list(made)) == {"forgetting_bpc": 0.5, "learning_bpc": 2.0}


def test_evaluation_points_do_not_change_training(probe, tmp_path):
    out, cfg_a, _, _, summary = probe
    one = run_continual(cfg_a, 8, tmp_path / "one", corpus_b="synthetic", eval_points=1, set_b=SET_B, progress=False)
    assert [p["step_b"] for p in one["points"]] == [0, 8]
    for key in ("a_valid_bpc", "b_valid_bpc", "a_test_bpc", "b_test_bpc"):
        assert one["points"][-1][key] == summary["points"][-1][key], key


def test_a_probe_is_never_silently_overwritten(probe):
    out, cfg_a, *_ = probe
    with pytest.raises(RunDirError, match="already holds a run"):
        run_continual(cfg_a, 8, out, corpus_b="synthetic", eval_points=4, set_b=SET_B, progress=False)
    before = (out / "summary.json").read_text()
    assert run_continual(cfg_a, 8, out, corpus_b="synthetic", eval_points=4, set_b=SET_B, resume=True,
                         progress=False)["status"] == "finished"
    assert (out / "summary.json").read_text() == before


def test_resume_keeps_phase_a_and_runs_phase_b_again(probe, tmp_path):
    out, cfg_a, _, _, summary = probe
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    (copy / "summary.json").unlink()  # as a run stopped during phase B leaves it
    shutil.rmtree(copy / "phase_b")
    kept = (copy / "phase_a" / "summary.json").read_text()
    again = run_continual(cfg_a, 8, copy, corpus_b="synthetic", eval_points=4, set_b=SET_B, resume=True,
                          progress=False)
    assert (copy / "phase_a" / "summary.json").read_text() == kept
    assert again["points"] == summary["points"]


def test_a_stopped_phase_b_resumes_from_its_last_point(probe, tmp_path):
    """Stopped after step 5 of 8 (points at 2, 4, 6, 8): the resume keeps points 0-2, drops one
    recorded after the checkpoint of step 4, continues from that checkpoint and ends with the
    uninterrupted run's points, bit for bit."""
    out, cfg_a, _, _, summary = probe
    run = tmp_path / "run"
    args = dict(corpus_b="synthetic", eval_points=4, set_b=SET_B, progress=False)
    assert run_continual(cfg_a, 8, run, stop_after=5, **args) == {"stopped_at": 5}
    lines = [json.loads(x) for x in (run / "continual.jsonl").read_text().splitlines()]
    assert [p["step_b"] for p in lines] == [0, 2, 4] and ckpt.load(run / "phase_b" / "checkpoint.pt")["step"] == 4
    with open(run / "continual.jsonl", "a") as f:  # a point recorded after the checkpoint (a kill between them)
        f.write(json.dumps({**lines[-1], "point": 3, "step_b": 6}) + "\n")
    resumed = run_continual(cfg_a, 8, run, resume=True, **args)
    assert resumed["points"] == summary["points"] and resumed["forgetting_bpc"] == summary["forgetting_bpc"]
    assert [json.loads(x) for x in (run / "continual.jsonl").read_text().splitlines()] == summary["points"]


def test_a_sigterm_in_phase_b_stops_at_its_next_point_and_the_resume_ends_as_the_uninterrupted_run(
        probe, tmp_path, monkeypatch):
    """SIGTERM during the point at step 2 of 8: phase B stops there with its checkpoint, both
    summaries read "stopped", the error says so in one line, and the resume ends with the
    uninterrupted run's points, bit for bit."""
    import os
    import signal

    from nlcore.errors import StoppedError
    from nlcore.training import continual

    out, cfg_a, _, _, summary = probe
    run = tmp_path / "run"
    shutil.copytree(out / "phase_a", run / "phase_a")  # phase A finished: the signal comes in phase B
    args = dict(corpus_b="synthetic", eval_points=4, set_b=SET_B, progress=False)
    measure = continual.Probe.__call__

    def signalled(self, point, step_b, **kw):
        if point == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return measure(self, point, step_b, **kw)

    monkeypatch.setattr(continual.Probe, "__call__", signalled)
    with pytest.raises(StoppedError, match=r"SIGTERM at phase B's step 2 of 8 \(a probe point\).*--resume"):
        run_continual(cfg_a, 8, run, resume=True, **args)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone with the probe
    assert json.loads((run / "summary.json").read_text())["status"] == "stopped"
    assert json.loads((run / "phase_b" / "summary.json").read_text())["status"] == "stopped"
    assert ckpt.load(run / "phase_b" / "checkpoint.pt")["step"] == 2
    monkeypatch.setattr(continual.Probe, "__call__", measure)
    resumed = run_continual(cfg_a, 8, run, resume=True, **args)
    assert resumed["points"] == summary["points"] and resumed["status"] == "finished"


def test_a_resume_after_phase_b_ended_takes_only_the_last_point(probe, tmp_path, monkeypatch):
    out, cfg_a, _, _, summary = probe
    run = tmp_path / "run"
    shutil.copytree(out, run)
    (run / "summary.json").unlink()  # killed while measuring the last point
    lines = (run / "continual.jsonl").read_text().splitlines()
    (run / "continual.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    trained = []
    monkeypatch.setattr(Trainer, "_loop", lambda self, *a: trained.append(self.cfg.name))  # no training step
    again = run_continual(cfg_a, 8, run, corpus_b="synthetic", eval_points=4, set_b=SET_B, resume=True,
                          progress=False)
    assert trained == [] and again["points"] == summary["points"]


def one_line(err: str) -> str:
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("args, message, code", [
    (["--corpus-b", "wikitext3"], "data.corpus: unknown corpus 'wikitext3'", 1),
    (["--corpus-b", "synthetic", "--eval-points", "9"], "eval_points: need 1 <= K <= steps_b=4", 2),
])
def test_cli_errors_are_one_line(capsys, tmp_path, args, message, code):
    rc = cli.main(["continual", "--preset", "smoke", "--steps-b", "4", "--out", str(tmp_path / "run"),
                   "--no-progress", "--set", "steps=4", *args])
    assert rc == code and message in one_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()  # nothing written before the corpora are read


def test_cli_runs_the_probe(capsys, tmp_path):
    rc = cli.main(["continual", "--preset", "smoke", "--corpus-b", "synthetic", "--set-b", "data.synth_seed=1",
                   "--steps-b", "4", "--eval-points", "2", "--out", str(tmp_path / "run"), "--no-progress",
                   *[a for s in TINY for a in ("--set", s)]])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["forgetting_bpc"] == printed["a_valid_bpc_end"] - printed["a_valid_bpc_after_a"]
