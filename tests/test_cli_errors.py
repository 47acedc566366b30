"""Every failure of `python -m nlcore` is one line naming what is wrong and what to do, and a
non-zero exit; the traceback only with --debug. docs/errors.md lists these messages."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from nlcore import cli
from nlcore.paths import REPO_ROOT

SMOKE = ["train", "--preset", "smoke", "--no-progress", "--set", "steps=12", "--set", "ckpt_every=4",
         "--set", "log_every=4", "--set", "eval_every=0", "--set", "data.synth_chars=20000"]


def run(capsys, *args):
    rc = cli.main(list(args))
    err = capsys.readouterr().err.strip()
    return rc, err


def one_line(err: str) -> str:
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def folder(tmp_path, **texts):
    f = tmp_path / "corpus"
    f.mkdir(exist_ok=True)
    for split in ("train", "valid", "test"):
        if split in texts:
            (f / f"{split}.txt").write_text(texts[split])
    return f


def test_unknown_corpus(capsys, tmp_path):
    rc, err = run(capsys, *SMOKE, "--out", str(tmp_path / "r"), "--set", "data.corpus=wikitext3")
    assert rc == 1 and "unknown corpus 'wikitext3'" in one_line(err) and "use one of" in err


def test_missing_split_file(capsys, tmp_path):
    f = folder(tmp_path, train="abc " * 500, valid="abc " * 50)
    rc, err = run(capsys, *SMOKE, "--out", str(tmp_path / "r"), "--set", f"data.corpus={f}")
    assert rc == 1 and f"missing corpus file {f / 'test.txt'}" in one_line(err)


def test_data_not_found(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("NLCORE_DATA", str(tmp_path / "nowhere"))
    from nlcore.data import clear_cache

    clear_cache()
    rc, err = run(capsys, *SMOKE, "--out", str(tmp_path / "r"), "--set", "data.corpus=wikitext2")
    assert rc == 1 and "corpus 'wikitext2' not found" in one_line(err) and "NLCORE_DATA" in err


def test_diverged_training(capsys, tmp_path):
    rc, err = run(capsys, *SMOKE, "--out", str(tmp_path / "r"), "--set", "cms.levels.fast.lr=1e30",
                  "--set", "cms.grad_clip=0")
    assert rc == 1 and "training diverged" in one_line(err) and "lower" in err


def test_bad_out(capsys, tmp_path):
    (tmp_path / "file").write_text("x")
    rc, err = run(capsys, *SMOKE, "--out", str(tmp_path / "file"))
    assert rc == 1 and "is a file" in one_line(err)


def test_existing_run_and_missing_checkpoint(capsys, tmp_path):
    assert run(capsys, *SMOKE, "--out", str(tmp_path / "r"))[0] == 0
    rc, err = run(capsys, *SMOKE, "--out", str(tmp_path / "r"))
    assert rc == 1 and "already holds a run" in one_line(err)
    rc, err = run(capsys, *SMOKE, "--out", str(tmp_path / "new"), "--resume")
    assert rc == 1 and "nothing to resume" in one_line(err)


def test_corrupt_checkpoint(capsys, tmp_path):
    out = tmp_path / "r"
    assert run(capsys, *SMOKE, "--out", str(out))[0] == 0
    (out / "summary.json").unlink()  # as if stopped before the end
    (out / "checkpoint.pt").write_bytes(b"\x00garbage")
    rc, err = run(capsys, *SMOKE, "--out", str(out), "--resume")
    assert rc == 1 and f"cannot read checkpoint {out / 'checkpoint.pt'}" in one_line(err)


def test_vocabulary_mismatch_on_resume(capsys, tmp_path):
    f = folder(tmp_path, train="abc " * 500, valid="abc " * 50, test="abc " * 50)
    out = tmp_path / "r"
    args = [*SMOKE, "--out", str(out), "--set", f"data.corpus={f}", "--set", "data.batch_size=2"]
    assert run(capsys, *args)[0] == 0
    (out / "summary.json").unlink()
    (f / "train.txt").write_text("abd " * 500)
    from nlcore.data import clear_cache

    clear_cache()
    rc, err = run(capsys, *args, "--resume")
    assert rc == 1 and "another vocabulary" in one_line(err)


def test_config_error_exits_2(capsys, tmp_path):
    rc, err = run(capsys, *SMOKE, "--out", str(tmp_path / "r"), "--set", "cms.levels.turbo.lr=1")
    assert rc == 2 and "turbo" in one_line(err)


def test_debug_shows_the_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "nlcore", *SMOKE, "--out", str(tmp_path / "r"), "--set",
                        "data.corpus=wikitext3"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.strip().startswith("error: ") and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "nlcore", *SMOKE, "--out", str(tmp_path / "r"), "--set",
                        "data.corpus=wikitext3", "--debug"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" in r.stderr


@pytest.mark.parametrize("flag, env, want", [(None, None, 1), (None, "3", 3), (2, "3", 2)])
def test_cpu_threads_are_capped(flag, env, want, monkeypatch):
    before = torch.get_num_threads()
    if env is None:
        monkeypatch.delenv("NLCORE_THREADS", raising=False)
    else:
        monkeypatch.setenv("NLCORE_THREADS", env)
    cli._cap_threads(flag)
    assert torch.get_num_threads() == want
    torch.set_num_threads(before)


def test_evaluate_context_errors(capsys, tmp_path):
    rc, err = run(capsys, "evaluate-context", "--run", str(tmp_path / "nothing"), "--device", "cpu")
    assert rc == 1 and "no checkpoint.pt in" in one_line(err) and "finished training" in err
    assert cli.main([*SMOKE, "--out", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    assert cli.main(["evaluate-context", "--run", str(tmp_path / "r"), "--device", "cpu", "--split", "valid"]) == 0
    assert "bpc over" in capsys.readouterr().out and (tmp_path / "r" / "bpc_by_context_valid.json").is_file()
    rc, err = run(capsys, "evaluate-context", "--run", str(tmp_path / "r"), "--device", "cpu", "--split", "valid")
    assert rc == 1 and "--overwrite" in one_line(err)
    rc = cli.main(["evaluate-context", "--skip", "--run", str(tmp_path / "nothing"), str(tmp_path / "r"),
                   "--device", "cpu", "--split", "valid"])
    out = capsys.readouterr().out
    assert rc == 0 and out.count("skipped: ") == 2 and "nothing" in out and "--overwrite" in out


def test_aggregate_only_on_a_folder_without_finished_runs(capsys, tmp_path):
    rc, err = run(capsys, "experiment", "06_hope_titans", "--mode", "smoke", "--aggregate-only",
                  "--out", str(tmp_path / "empty"))
    assert rc == 1 and "no finished runs under" in one_line(err) and "unexpected" not in err


def test_sigterm_stops_training_with_one_line_and_a_checkpoint(tmp_path):
    import signal
    import time

    out = tmp_path / "r"
    cmd = [sys.executable, "-m", "nlcore", *SMOKE, "--out", str(out), "--set", "steps=100000",
           "--set", "data.seq_len=16", "--set", "data.batch_size=4"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").is_file() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    line = one_line(err)
    assert proc.returncode == 1 and line.startswith("error: stopped by SIGTERM at step ")
    assert line.endswith(f"of 100000, its checkpoint saved in {out}: continue with --resume")
    assert (out / "checkpoint.pt").is_file()
