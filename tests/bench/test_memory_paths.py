"""The chunk-vs-token timing harness runs and reports what it measured (tiny sizes, CPU)."""

import json

import pytest
import torch

from nlcore.bench.memory_paths import _case, main, run


def test_speed_report_has_both_paths_for_every_memory():
    rep = run(window=16, B=1, H=2, d=4, chunk=8, repeats=1, device="cpu")
    assert [r["memory"] for r in rep["rows"]] == ["linear", "mlp", "hope_layer"]
    for r in rep["rows"]:
        assert r["token_s"] > 0 and r["chunk_s"] > 0
        assert abs(r["speedup"] - r["token_s"] / r["chunk_s"]) < 1e-12
    assert rep["git"] and rep["environment"]["torch"]


def test_speed_kinds_subset_and_graph_needs_cuda(tmp_path, capsys):
    rep = run(window=8, B=1, H=1, d=4, chunk=4, repeats=1, device="cpu", kinds=("hope_layer",))
    assert [r["memory"] for r in rep["rows"]] == ["hope_layer"] and "speedup_graph" not in rep["rows"][0]
    with pytest.raises(ValueError, match="CUDA"):
        run(window=8, B=1, H=1, d=4, chunk=4, repeats=1, device="cpu", graph=True)
    with pytest.raises(ValueError, match="kinds"):
        run(window=8, B=1, H=1, d=4, chunk=4, repeats=1, device="cpu", kinds=("lstm",))
    with pytest.raises(SystemExit):
        main(["--window", "8", "--batch", "1", "--device", "cpu", "--graph"])
    assert "CUDA" in capsys.readouterr().err
    out = tmp_path / "speed.json"
    assert main(["--window", "8", "--batch", "1", "--chunk", "4", "--repeats", "1", "--device", "cpu",
                 "--kinds", "linear", "mlp", "--out", str(out)]) == 0
    assert [r["memory"] for r in json.loads(out.read_text())["rows"]] == ["linear", "mlp"]


def test_hope_chunk_loop_op_budget():
    """The HOPE layer's chunk loop is launch-bound, so its cost is its number of operations per
    chunk (forward + backward): non-view aten ops counted on CPU, the difference between 16 and
    8 chunks over 8. 65 at the time of writing (69 before M_init k joined the keys' product); 55 when
    the state carried M_init as a constant slot (fewer eager ops, more state to move; the compiled
    step is what counts, results/bench/profiles/NOTE.md); 277 before the loop was rewritten."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.n += 0 if func.is_view else 1
            return func(*args, **(kwargs or {}))

    def ops(T: int) -> int:
        fn = _case("hope_layer", "chunk", 2, 4, T, 16, 16, torch.device("cpu"))
        with Count() as c:
            fn()
        return c.n

    per_chunk = (ops(256) - ops(128)) / 8
    assert per_chunk <= 72, per_chunk
