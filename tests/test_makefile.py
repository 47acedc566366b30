"""The Makefile's choice of torch build: CUDA where a GPU is, the CPU build on Linux without one
(from PyTorch's CPU index, pinned +cpu so that nothing else can be installed silently), the
default elsewhere."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from nlcore.paths import REPO_ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def spec(**env) -> str:
    args = [f"{k}={v}" for k, v in env.items()]
    return subprocess.run(["make", "-s", "torch-spec", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_gpu_gets_the_default_cuda_build():
    assert spec(HAS_GPU="1", UNAME_S="Linux") == "torch"


def test_linux_without_gpu_gets_the_cpu_build_from_the_cpu_index():
    s = spec(HAS_GPU="", UNAME_S="Linux")
    assert s.startswith("torch==") and s.split()[0].endswith("+cpu")
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in s


def test_macos_gets_the_plain_build():
    s = spec(HAS_GPU="", UNAME_S="Darwin")
    assert s.startswith("torch==") and "+cpu" not in s and "index" not in s


def test_an_explicit_spec_wins():
    assert spec(TORCH_SPEC="torch==9.9") == "torch==9.9"
