"""The notebook's context: `setup()` seeds, sets determinism and plot style, and returns a `Context`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nlcore import paths


@dataclass(frozen=True)
class Context:
    """Where one notebook's outputs go, and the parameters it ran with."""

    stem: str
    mode: str
    seed: int
    device: str
    fig_dir: Path
    results_dir: Path
    reuse_results: bool = False
    config: object = None  # the TrainConfig preset this mode's experiment starts from

    def save(self, fig, slug: str):
        """Write `fig` as `<fig_dir>/<slug>.png` and `.pdf`; return `fig` (so a cell shows it)."""
        from nlcore.report.plotting import save_figure

        save_figure(fig, slug, self.fig_dir)
        return fig


def _notebook_stems() -> list[str]:
    return sorted({p.stem for p in paths.NOTEBOOKS.glob("[0-9][0-9]_*.py")}
                  | {p.stem for p in paths.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")})


def _inline_figures() -> None:
    """Inside a Jupyter kernel, render figures inline (the runner's MPLBACKEND=Agg would
    otherwise leave the executed notebook without images)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None and getattr(shell, "kernel", None) is not None:
        shell.run_line_magic("matplotlib", "inline")


def setup(stem: str, mode: str = "smoke", seed: int = 0, device: str = "auto",
          reuse_results: bool = False) -> Context:
    """Seed, set determinism and plot style, print a header; return the notebook's Context."""
    import torch

    from nlcore import repro
    from nlcore.report import plotting

    paths.check_mode(mode)
    stems = _notebook_stems()
    if stem not in stems:
        raise ValueError(f"setup({stem!r}): no notebook notebooks/{stem}.py; notebooks are {stems}")
    if not isinstance(reuse_results, bool):
        raise TypeError(f"reuse_results must be True or False, got {reuse_results!r}")
    dev = repro.pick_device(device)  # informational: each run takes its device from its config
    cfg = _preset_for(stem, mode)
    repro.set_determinism(True, warn_only=(mode == "full"))
    repro.seed_everything(seed)
    plotting.apply_style()
    _inline_figures()
    ctx = Context(stem=stem, mode=mode, seed=int(seed), device=str(dev),
                  fig_dir=paths.figures_root(mode) / stem, results_dir=paths.results_root(mode) / stem,
                  reuse_results=reuse_results, config=cfg)
    git = repro.git_info()
    sha = (git["revision"] or "unknown")[:10] + ("+dirty" if git["dirty"] else "")
    print(f"nlcore notebook {stem} | mode {mode}{' (re-plotting committed results)' if reuse_results else ''}"
          f" | device {dev} | torch {torch.__version__} | git {sha} | seed {seed}")
    print(f"  figures -> {relpath(ctx.fig_dir)}   results -> {relpath(ctx.results_dir)}")
    return ctx


def _preset_for(stem: str, mode: str):
    """The preset (with the experiment's common overrides) that `stem`'s grid uses in `mode`."""
    from nlcore.config import apply_overrides, preset
    from nlcore.experiments import EXPERIMENTS

    exp = EXPERIMENTS.get(stem)
    if exp is None:
        return preset("seed" if mode == "full" else "smoke")
    _, _, common = exp.grid(mode)
    return apply_overrides(preset(exp.mode(mode).preset), list(common))


def relpath(p: Path) -> str:
    try:
        return str(p.relative_to(paths.REPO_ROOT))
    except ValueError:
        return str(p)
