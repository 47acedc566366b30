"""Text from a trained run: load its checkpoint, read a prompt, write characters one at a time.

Generation runs the model exactly as evaluation does, so what it writes is what the model's
held-out bits per character measure. The text is cut into windows of the run's length T and the
recurrent state (LSTM state, Titans and HOPE memories, HOPE's chain offsets) is carried from one
window to the next. The next character after position p of the current window comes from the
logits at p of that window run from the window's starting state, padded to length T; causality
(tests/models/test_causality.py) makes the padding invisible to positions up to p. When a window
is full and the character after it is known, the window runs once more with every target (HOPE's
in-forward writes read the next characters) and its final state starts the next window. So the
state after the prompt and the generated text equals the state from running the model over that
text window by window, and the logits behind each character are evaluation's logits.

`write=False` freezes what the generated text writes into the model: windows after the prompt
start from the state the prompt's whole windows left, and a window that holds generated text takes
no HOPE chain writes (its targets are all ignored, so the chain's chunk gradients are zero). Writes of the Titans and HOPE memories inside one window are part of the
forward pass and still happen.

    s = nl.sample("results/06_hope_titans/runs/hope/seed0", prompt="The ", chars=200, temperature=0.8)
    print(s.text)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from nlcore.config import from_dict
from nlcore.data.tokenizer import CharTokenizer
from nlcore.errors import CheckpointError, RunDirError
from nlcore.training import checkpoint as ckpt

IGNORE = -100  # a target nobody reads (cross_entropy's ignore_index)


@dataclass
class Loaded:
    """A trained model ready to sample: the model (eval mode), its tokenizer, window length, config."""

    model: torch.nn.Module
    tokenizer: CharTokenizer
    seq_len: int
    config: object
    path: Path


@dataclass
class Sample:
    """A prompt and what followed it. `state` is the carried state at character `start` (a window
    boundary), `logits` the (N, V) logits each generated character was drawn from."""

    prompt: str
    text: str
    ids: list[int]
    state: dict
    start: int
    logits: torch.Tensor


def load(run: str | Path, device: str | torch.device = "cpu", *, unfinished: bool = False) -> Loaded:
    """The model of run directory `run` (or of a checkpoint file), on `device`, in eval mode. A run
    directory whose training did not finish (killed, diverged, stopped) is refused unless
    `unfinished`: its checkpoint holds the model of a step before the last, not the trained one."""
    from nlcore.results import read_json
    from nlcore.training import rundir
    from nlcore.training.trainer import model_for, resolve_compat

    path = Path(run)
    if path.is_dir():
        st = rundir.status(path) or (read_json(path / "meta.json").get("status") if (path / "meta.json").is_file()
                                     else "finished")  # a bare checkpoint in a folder: nothing says otherwise
        if not unfinished and st != "finished":
            raise RunDirError(f"{path} has not finished training (status {st}): its checkpoint is the model of "
                              f"a step before its last; finish the run with --resume, or sample it anyway with --unfinished")
        path = path / ckpt.CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: sample from a run directory that finished "
                              f"training (it holds {ckpt.CHECKPOINT_NAME})")
    payload = ckpt.load(path, map_location=device)
    try:
        cfg = resolve_compat(from_dict(payload["config"]))
        tok = CharTokenizer.from_dict(payload["tokenizer"])
        model = model_for(cfg, tok.vocab_size)
        model.load_state_dict(payload["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {path} does not describe a model nlcore can build ({first}): "
                              f"it is damaged or from an incompatible version") from e
    model.to(device).eval()
    return Loaded(model, tok, cfg.data.seq_len, cfg, path)


def _pick(logits: torch.Tensor, temperature: float, top_k: int | None, gen: torch.Generator) -> int:
    """One id from (V,) logits: the argmax at temperature 0, else a draw from softmax(logits / T)
    restricted to the top_k largest."""
    if temperature == 0:
        return int(logits.argmax())
    z = logits.double() / temperature
    if top_k is not None and top_k < z.numel():
        kth = torch.topk(z, top_k).values[-1]
        z = z.masked_fill(z < kth, float("-inf"))
    return int(torch.multinomial(torch.softmax(z, dim=-1).cpu(), 1, generator=gen))


def sample(run, prompt: str = "\n", chars: int = 200, *, temperature: float = 1.0, top_k: int | None = None,
           seed: int = 0, write: bool = True, device: str | torch.device = "cpu", progress: bool = False,
           graph: bool | None = None, unfinished: bool = False) -> Sample:
    """`chars` characters after `prompt` from `run` (a run directory, a checkpoint, or `load`'s result).
    `progress`: a bar over the characters drawn. Every character reads a whole window, so on CUDA
    (`graph` None, or True anywhere) the window is replayed from one captured graph
    (`nlcore.accel.cuda_graph.GraphedEval`; on CPU an emulation, bit-identical to eager), which
    spares an eager window one launch per operation; a window the graph cannot take runs eagerly.
    `unfinished`: sample a run that did not finish training (`load`)."""
    from tqdm.auto import tqdm

    from nlcore.accel.cuda_graph import GraphedEval

    if not prompt:
        raise ValueError("sample: the prompt must hold at least one character")
    if chars < 0 or temperature < 0 or (top_k is not None and top_k < 1):
        raise ValueError(f"sample: need chars >= 0, temperature >= 0 and top_k >= 1 "
                         f"(got {chars}, {temperature}, {top_k})")
    run = run if isinstance(run, Loaded) else load(run, device, unfinished=unfinished)
    model, tok, T = run.model, run.tokenizer, run.seq_len
    dev = next(model.parameters()).device
    reset = run.config.state.reset
    every = run.config.state.reset_every if reset == "every_n" else (1 if reset == "every_batch" else 0)
    gen = torch.Generator().manual_seed(seed)
    ids = tok.encode(prompt).tolist()
    n_prompt = len(ids)
    uses_targets = getattr(model, "uses_targets", False)

    def forward(x: torch.Tensor, y: torch.Tensor, state: dict):
        return model(x, state, None, **({"targets": y} if uses_targets else {}))

    replay = GraphedEval(model, 1, T, dev, forward=forward) if (dev.type == "cuda" if graph is None else graph) \
        else None

    def window(start: int, state: dict):
        """Logits and final state of the window at `start`, padded to T (unknown targets ignored);
        both are the sampler's own (a replay's outputs are the graph's static buffers)."""
        x = torch.zeros(1, T, dtype=torch.long, device=dev)
        part = ids[start:start + T]
        x[0, :len(part)] = torch.tensor(part, device=dev)
        y = torch.full((1, T), IGNORE, dtype=torch.long, device=dev)
        if uses_targets:  # frozen: a window that reads generated text has no targets, so no writes
            nxt = ids[start + 1:start + T + 1] if write or start + T < n_prompt else []
            y[0, :len(nxt)] = torch.tensor(nxt, device=dev)
        with torch.no_grad():
            out = replay.window(x, y, state, None) if replay is not None else None
            if out is None:
                return forward(x, y, state)
            return out[0].clone(), {k: v.clone() for k, v in out[1].items()}

    state, start, windows = model.init_state(1, dev), 0, 0
    drawn = []
    bar = tqdm(total=chars, disable=not progress, desc="sample", unit="char", leave=False)
    while True:
        while len(ids) - start > T:  # a full window with the character after it: advance
            if write or start + T < n_prompt:  # frozen: only windows of prompt alone move the state
                _, state = window(start, state)
            start, windows = start + T, windows + 1
            if every and windows % every == 0:
                state = model.init_state(1, dev)
        if len(ids) - n_prompt == chars:
            break
        logits, _ = window(start, state)
        row = logits[0, len(ids) - start - 1].float()
        drawn.append(row.cpu())
        ids.append(_pick(row, temperature, top_k, gen))
        bar.update()
    bar.close()
    logits = torch.stack(drawn) if drawn else torch.zeros(0, tok.vocab_size)
    return Sample(prompt=prompt, text=tok.decode(ids[n_prompt:]), ids=ids, state=state, start=start, logits=logits)


def sample_table(runs, prompts, *, chars: int = 200, temperature: float = 1.0, top_k: int | None = None,
                 seeds=(0,), write: bool = True, device: str | torch.device = "cpu", progress: bool = False,
                 unfinished: bool = False) -> dict:
    """Every run continues every prompt under every seed, the same settings for all: a record with
    the settings, each run's held-out bpc (its summary.json, when there is one) and the texts."""
    import os

    from nlcore import repro
    from nlcore.results import read_json

    rows = []
    folders = [Path(r).resolve() if Path(r).is_dir() else Path(r).resolve().parent for r in runs]
    if len(folders) > 1:
        root = Path(os.path.commonpath(folders))
    else:  # one run: named from its experiment's folder on when it lies in one (<exp>/runs/<config>/...)
        runs_dir = next((p for p in folders[0].parents if p.name == "runs"), None)
        root = runs_dir.parent.parent if runs_dir is not None else folders[0].parent
    for run, folder in zip(runs, folders):
        loaded = load(run, device, unfinished=unfinished)
        summary = read_json(folder / "summary.json") if (folder / "summary.json").is_file() else {}
        parts = folder.parts
        config = parts[parts.index("runs") + 1] if "runs" in parts[:-1] else folder.name  # runs/<config>/...
        for prompt in prompts:
            for seed in seeds:
                s = sample(loaded, prompt, chars, temperature=temperature, top_k=top_k, seed=seed, write=write,
                           progress=progress)
                rows.append({"run": folder.relative_to(root).as_posix(), "config": config,
                             "model": loaded.config.model.kind, "test_bpc": summary.get("test_bpc"),
                             "valid_bpc": summary.get("valid_bpc"), "prompt": prompt, "seed": seed, "text": s.text})
    return {"schema": "nlcore.samples/1", "command": repro.command_line(), "git": repro.git_info(),
            "device": str(device), "utc_time": repro.utc_now(),
            "settings": {"chars": chars, "temperature": temperature, "top_k": top_k, "seeds": list(seeds),
                         "write": write, "prompts": list(prompts)},
            "samples": rows}


def merge_tables(tables: list[dict]) -> dict:
    """One samples record from several `sample_table` records (or merged ones) written with the same
    settings, e.g. by calls that sampled different runs: their samples in order, and under
    ``sources`` the command, revision, device and time of every call with the runs it sampled.
    Settings that differ, or a (run, prompt, seed) sampled twice, raise ValueError."""
    if not tables:
        raise ValueError("merge_tables: give at least one samples record")
    settings = tables[0]["settings"]
    sources, rows, seen = [], [], set()
    for i, t in enumerate(tables):
        if t["settings"] != settings:
            diff = sorted(k for k in {*settings, *t["settings"]} if settings.get(k) != t["settings"].get(k))
            raise ValueError(f"merge_tables: record {i} was sampled with other settings ({', '.join(diff)}): "
                             f"merge only records with the same prompts, characters, temperature and seeds")
        for r in t["samples"]:
            key = (r["run"], r["prompt"], r["seed"])
            if key in seen:
                raise ValueError(f"merge_tables: run {r['run']} with prompt {r['prompt']!r} and seed {r['seed']} "
                                 f"appears twice: keep one record of it")
            seen.add(key)
            rows.append(r)
        sources += t.get("sources") or [{k: t[k] for k in ("command", "git", "device", "utc_time")}
                                        | {"runs": list(dict.fromkeys(r["run"] for r in t["samples"]))}]
    return {"schema": "nlcore.samples/1", "settings": settings, "sources": sources, "samples": rows}
