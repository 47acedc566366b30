"""The chunk-vs-token timing harness runs and reports what it measured (tiny sizes, CPU)."""

from nlcore.memory.speed import run


def test_speed_report_has_both_paths_for_every_memory():
    rep = run(window=16, B=1, H=2, d=4, chunk=8, repeats=1, device="cpu")
    assert [r["memory"] for r in rep["rows"]] == ["linear", "mlp", "hope_layer"]
    for r in rep["rows"]:
        assert r["token_s"] > 0 and r["chunk_s"] > 0
        assert abs(r["speedup"] - r["token_s"] / r["chunk_s"]) < 1e-12
    assert rep["git"] and rep["environment"]["torch"]
