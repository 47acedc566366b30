"""nlcore.repro: seeding, determinism flags, device choice, provenance, RNG state round trips."""

from __future__ import annotations

import datetime as dt
import json
import random
import shutil
import socket
import subprocess

import numpy as np
import pytest
import torch

from nlcore import repro


def _draws():
    return (
        [random.random() for _ in range(3)],
        np.random.rand(3).tolist(),
        torch.rand(3).tolist(),
        torch.randint(0, 1000, (4,)).tolist(),
    )


def test_same_seed_same_draws_different_seed_different_draws():
    repro.seed_everything(123)
    a = _draws()
    repro.seed_everything(123)
    b = _draws()
    repro.seed_everything(124)
    c = _draws()
    assert a == b
    assert all(x != y for x, y in zip(a, c))


def test_same_seed_same_model_init():
    repro.seed_everything(7)
    w1 = torch.nn.Linear(8, 4).weight.detach().clone()
    repro.seed_everything(7)
    w2 = torch.nn.Linear(8, 4).weight.detach().clone()
    assert torch.equal(w1, w2)


@pytest.mark.parametrize("bad", [-1, 2**32, 1.5, "0", True])
def test_seed_everything_rejects_bad_seeds(bad):
    with pytest.raises((TypeError, ValueError)):
        repro.seed_everything(bad)


def test_seed_everything_accepts_numpy_int():
    repro.seed_everything(np.int64(5))
    assert torch.initial_seed() == 5


def test_set_determinism_flags():
    repro.set_determinism(True)
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    repro.set_determinism(True, warn_only=True)
    assert torch.is_deterministic_algorithms_warn_only_enabled()
    repro.set_determinism(False)
    assert not torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark


def test_pick_device_cpu_and_auto_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert repro.pick_device() == torch.device("cpu")
    assert repro.pick_device("auto") == torch.device("cpu")
    assert repro.pick_device("cpu") == torch.device("cpu")
    assert repro.pick_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "CUDA:1"])
def test_pick_device_cuda_absent_is_a_clear_error(monkeypatch, spec):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        repro.pick_device(spec)


def test_pick_device_cuda_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert repro.pick_device("auto") == torch.device("cuda")
    assert repro.pick_device("cuda") == torch.device("cuda")
    assert repro.pick_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(RuntimeError, match="only 2 CUDA device"):
        repro.pick_device("cuda:2")


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "", "cuda:-1"])
def test_pick_device_unknown_spec(spec):
    with pytest.raises(ValueError, match="unknown device spec"):
        repro.pick_device(spec)


def test_capture_environment_is_json_and_has_no_host_name():
    env = repro.capture_environment("cpu")
    text = json.dumps(env)  # plain JSON values only
    for key in ("python", "torch", "numpy", "cuda", "cudnn", "gpu_name", "cpu_count",
                "platform", "utc_time"):
        assert key in env
    assert env["torch"] == torch.__version__
    assert env["numpy"] == np.__version__
    assert env["device"] == "cpu"
    assert not {"hostname", "host", "node", "user"} & set(env)
    host = socket.gethostname()
    if len(host) >= 6:
        assert host not in text
    when = dt.datetime.fromisoformat(env["utc_time"])
    assert when.utcoffset() == dt.timedelta(0)
    assert abs((dt.datetime.now(dt.timezone.utc) - when).total_seconds()) < 60


def test_capture_environment_tolerates_a_non_device_spec():
    assert repro.capture_environment("auto")["device"] == "auto"
    assert repro.capture_environment()["device"] is None


def test_git_info_outside_a_repository(tmp_path):
    assert repro.git_info(tmp_path) == {"revision": None, "dirty": None, "branch": None}
    assert repro.git_info(tmp_path / "missing") == {"revision": None, "dirty": None,
                                                    "branch": None}


def test_git_info_without_git(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable to be found
    assert repro.git_info(tmp_path) == {"revision": None, "dirty": None, "branch": None}


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_git_info_in_a_scratch_repository(tmp_path, monkeypatch):
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "gitconfig"))
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args):
        subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t",
                        "-c", "commit.gpgsign=false", *args], check=True, capture_output=True)

    git("init", "-q", "-b", "trunk")
    assert repro.git_info(repo) == {"revision": None, "dirty": False, "branch": "trunk"}
    (repo / "a.txt").write_text("one\n")
    git("add", "a.txt")
    git("commit", "-q", "-m", "first")
    info = repro.git_info(repo)
    assert len(info["revision"]) == 40 and int(info["revision"], 16) >= 0
    assert info["dirty"] is False and info["branch"] == "trunk"
    (repo / "untracked.txt").write_text("x\n")
    assert repro.git_info(repo)["dirty"] is False  # untracked files do not count
    (repo / "a.txt").write_text("two\n")
    assert repro.git_info(repo)["dirty"] is True
    git("checkout", "-q", "--detach")
    assert repro.git_info(repo)["branch"] is None


def test_rng_state_round_trip_restores_every_stream():
    repro.seed_everything(3)
    state = repro.rng_state()
    first = _draws()
    repro.seed_everything(99)  # scramble everything
    repro.set_rng_state(state)
    assert _draws() == first


def test_rng_state_survives_a_weights_only_checkpoint(tmp_path):
    repro.seed_everything(11)
    _draws()  # move away from the freshly seeded state
    np.random.normal()  # leaves a cached Gaussian in NumPy's legacy state
    random.gauss(0, 1)  # and in Python's
    state = repro.rng_state()
    expected = _draws() + (np.random.normal(), random.gauss(0, 1))
    torch.save({"rng": state}, tmp_path / "ckpt.pt")
    loaded = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    repro.seed_everything(0)
    repro.set_rng_state(loaded["rng"])
    assert _draws() + (np.random.normal(), random.gauss(0, 1)) == expected


def test_rng_state_is_plain_data():
    state = repro.rng_state()
    assert set(state) == {"python", "numpy", "torch", "cuda"}
    assert isinstance(state["torch"], torch.Tensor) and state["torch"].dtype == torch.uint8
    json.dumps({k: v for k, v in state.items() if k in ("python", "numpy")})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path")
def test_set_rng_state_warns_when_cuda_states_cannot_be_restored():
    state = repro.rng_state()
    state["cuda"] = [torch.get_rng_state()]
    with pytest.warns(RuntimeWarning, match="CUDA generator"):
        repro.set_rng_state(state)


def test_command_line_names_no_path():
    cmd = repro.command_line()
    assert cmd and "/" not in cmd.split()[0]
