"""Sampling from a trained run: greedy at temperature 0, evaluation's logits and state, seeds,
frozen writes, and one-line errors for a bad checkpoint."""

from __future__ import annotations

import pytest
import torch

from nlcore.cli import main
from nlcore.config import apply_overrides, preset
from nlcore.errors import CheckpointError, RunDirError
from nlcore.results import read_json, write_json
from nlcore.training import sampling as gen
from nlcore.training.trainer import Trainer

T = 8
TINY = ["steps=4", "ckpt_every=0", "log_every=2", "eval_every=0", "eval_windows=1", "data.synth_chars=6000",
        "data.batch_size=2", f"data.seq_len={T}", "model.d_model=8", "model.d_ff=16", "model.n_layers=1",
        "model.n_heads=2", "model.mem_chunk=4", "compile=off"]
KINDS = {
    "nested_lstm": [],
    "transformer": ["model.kind=transformer"],
    "titans": ["model.kind=titans", "model.memory=linear"],
    "hope": ["model.kind=hope", "model.cms_chunks=4,8", "model.cms_lr=0.5"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny trained run per model kind (a finished run keeps its checkpoint)."""
    out = {}
    for kind, extra in KINDS.items():
        d = tmp_path_factory.mktemp(kind) / "run"
        Trainer(apply_overrides(preset("smoke"), TINY + extra), d, progress=False).run()
        out[kind] = d
    return out


def windows_over(loaded, ids: list[int]):
    """Logits and final state of the model over `ids` (a whole number of windows plus the character
    after them), window by window with carried state, as evaluation runs it."""
    model, state, logits = loaded.model, loaded.model.init_state(1), []
    x_all = torch.tensor(ids[:-1]).view(1, -1)
    y_all = torch.tensor(ids[1:]).view(1, -1)
    with torch.no_grad():
        for s in range(0, x_all.shape[1], T):
            kw = {"targets": y_all[:, s:s + T]} if getattr(model, "uses_targets", False) else {}
            out, state = model(x_all[:, s:s + T], state, None, **kw)
            logits.append(out[0])
    return torch.cat(logits), state


@pytest.mark.parametrize("kind", list(KINDS))
def test_generation_is_evaluation_character_by_character(runs, kind):
    loaded = gen.load(runs[kind])
    s = gen.sample(loaded, prompt="the c", chars=3 * T - 5 + 1, temperature=1.0, seed=3)
    assert len(s.ids) == 3 * T + 1 and s.start == 3 * T
    ref_logits, ref_state = windows_over(loaded, s.ids)
    torch.testing.assert_close(s.logits, ref_logits[len("the c") - 1:].float(), rtol=1e-5, atol=1e-5)
    assert s.state.keys() == ref_state.keys()
    for k in ref_state:
        torch.testing.assert_close(s.state[k], ref_state[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("write", [True, False])
@pytest.mark.parametrize("kind", list(KINDS))
def test_windows_replayed_from_the_graph_sample_what_eager_windows_do(runs, kind, write):
    """The graphed window (on CPU its emulation, which runs the same body) hands back copies, so a
    window that only draws a character never moves the carried state."""
    loaded = gen.load(runs[kind])
    eager, replayed = (gen.sample(loaded, prompt="the c", chars=3 * T, temperature=1.0, seed=5, write=write,
                                  graph=g) for g in (False, True))
    assert replayed.ids == eager.ids and torch.equal(replayed.logits, eager.logits)
    for k in eager.state:
        assert torch.equal(replayed.state[k], eager.state[k])


@pytest.mark.parametrize("kind", ["nested_lstm", "hope"])
def test_temperature_zero_is_greedy_and_seeds_repeat(runs, kind):
    loaded = gen.load(runs[kind])
    greedy = gen.sample(loaded, prompt="the ", chars=12, temperature=0)
    assert greedy.ids[4:] == [int(r.argmax()) for r in greedy.logits]
    assert greedy.text == loaded.tokenizer.decode(greedy.ids[4:])
    a, b = (gen.sample(loaded, prompt="the ", chars=20, temperature=1.5, seed=7) for _ in range(2))
    c = gen.sample(loaded, prompt="the ", chars=20, temperature=1.5, seed=8)
    assert a.text == b.text and a.text != c.text


def test_top_k_one_is_greedy(runs):
    loaded = gen.load(runs["transformer"])
    assert gen.sample(loaded, prompt="a", chars=10, temperature=2.0, top_k=1).text == \
        gen.sample(loaded, prompt="a", chars=10, temperature=0).text


def test_frozen_writes_keep_the_prompts_state(runs):
    loaded = gen.load(runs["hope"])
    prompt = "the cat sat on th"  # two full windows of prompt and their next characters
    frozen = gen.sample(loaded, prompt=prompt, chars=3 * T, temperature=0, write=False)
    after_prompt = gen.sample(loaded, prompt=prompt, chars=0)
    for k in after_prompt.state:
        assert torch.equal(frozen.state[k], after_prompt.state[k])
    writing = gen.sample(loaded, prompt=prompt, chars=3 * T, temperature=0)
    assert any(not torch.equal(writing.state[k], after_prompt.state[k]) for k in after_prompt.state)
    torch.testing.assert_close(frozen.logits, gen.sample(loaded, prompt=prompt, chars=3 * T, temperature=0,
                                                         write=False).logits)  # nothing about the model changed


def test_cli_prints_the_text_and_errors_are_one_line(runs, tmp_path, capsys):
    assert main(["sample", "--run", str(runs["nested_lstm"]), "--prompt", "the ", "--chars", "10",
                 "--temperature", "0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("the ") and len(out.rstrip("\n")) >= 4
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert main(["sample", "--run", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot read checkpoint") and "\n" not in err
    assert main(["sample", "--run", str(tmp_path / "nowhere")]) == 1
    assert "no checkpoint at" in capsys.readouterr().err


def test_a_checkpoint_of_another_shape_is_a_one_line_error(runs, tmp_path):
    payload = torch.load(runs["nested_lstm"] / "checkpoint.pt", weights_only=True)
    payload["config"]["model"]["d_model"] = 16
    torch.save(payload, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="does not describe a model"):
        gen.load(tmp_path)


def test_sample_table_writes_every_run_prompt_and_seed_with_its_bpc(runs, tmp_path, capsys):
    out = tmp_path / "samples.json"
    picked = [str(runs["transformer"]), str(runs["hope"])]
    assert main(["sample", "--run", *picked, "--prompt", "ab", "--prompt", "the ", "--chars", "6",
                 "--temperature", "0.8", "--seed", "3", "--out", str(out)]) == 0
    table = read_json(out)
    kinds = [k for k in ("transformer", "hope") for _ in range(2)]
    assert [(r["run"], r["prompt"]) for r in table["samples"]] == [
        ("/".join(runs[k].parts[-2:]), p) for k in ("transformer", "hope") for p in ("ab", "the ")]
    for kind, row in zip(kinds, table["samples"]):
        one = gen.sample(runs[kind], row["prompt"], 6, temperature=0.8, seed=3)
        assert row["text"] == one.text and row["seed"] == 3 and row["model"] == kind and row["config"] == "run"
        assert row["test_bpc"] == read_json(runs[kind] / "summary.json")["test_bpc"]
    assert table["settings"]["chars"] == 6 and table["command"] and table["git"]
    assert f"--- {'/'.join(runs['hope'].parts[-2:])} (test bpc" in capsys.readouterr().out


def test_merged_records_keep_every_sample_and_each_calls_provenance(runs, tmp_path, capsys):
    import shutil

    a, b, merged = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "merged.json"
    common = ["--prompt", "ab", "--chars", "4", "--temperature", "0.8", "--seed", "1"]
    for kind, out in (("transformer", a), ("hope", b)):  # each call samples one run of one experiment
        d = shutil.copytree(runs[kind], tmp_path / "exp" / "runs" / kind / "seed0")
        assert main(["sample", "--run", str(d), *common, "--out", str(out)]) == 0
    assert main(["sample", "--merge", str(a), str(b), "--out", str(merged)]) == 0
    ra, rb, m = read_json(a), read_json(b), read_json(merged)
    assert m["samples"] == ra["samples"] + rb["samples"] and m["settings"] == ra["settings"]
    assert [s["runs"] for s in m["sources"]] == [["exp/runs/transformer/seed0"], ["exp/runs/hope/seed0"]]
    assert [s["command"] for s in m["sources"]] == [ra["command"], rb["command"]]
    # a merged record merges again, its sources kept; other settings or a repeated sample refuse
    assert gen.merge_tables([m])["sources"] == m["sources"]
    with pytest.raises(ValueError, match="appears twice"):
        gen.merge_tables([ra, m])
    other = dict(rb, settings=dict(rb["settings"], temperature=1.0))
    with pytest.raises(ValueError, match=r"other settings \(temperature\)"):
        gen.merge_tables([ra, other])
    assert main(["sample", "--merge", str(a), "--run", str(runs["hope"]), "--out", str(merged)]) == 2
    assert "error: sample --merge joins records" in capsys.readouterr().err


def test_one_run_in_an_experiment_is_named_from_the_experiment_folder(runs, tmp_path):
    import shutil

    d = tmp_path / "08_x" / "runs" / "hope" / "seed0" / "phase_a"
    shutil.copytree(runs["hope"], d)
    row = gen.sample_table([d], ["ab"], chars=2)["samples"][0]
    assert row["run"] == "08_x/runs/hope/seed0/phase_a" and row["config"] == "hope"


def test_a_run_that_did_not_finish_is_refused_unless_asked_for(runs, tmp_path, capsys):
    import shutil

    killed = tmp_path / "killed"
    shutil.copytree(runs["nested_lstm"], killed)
    (killed / "summary.json").unlink()
    meta = read_json(killed / "meta.json")
    write_json(killed / "meta.json", {**meta, "status": "running"})  # what a run killed mid-training leaves
    with pytest.raises(RunDirError, match="has not finished training .status running.*--unfinished"):
        gen.load(killed)
    assert main(["sample", "--run", str(killed), "--chars", "3"]) == 1
    err = capsys.readouterr().err.strip()
    assert "has not finished training" in err and "\n" not in err
    assert main(["sample", "--run", str(killed), "--chars", "3", "--temperature", "0", "--unfinished"]) == 0
    assert gen.sample(killed, "ab", 5, temperature=0, unfinished=True).text == \
        gen.sample(runs["nested_lstm"], "ab", 5, temperature=0).text  # the same weights either way
