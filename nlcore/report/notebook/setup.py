"""A notebook's context: `setup()` seeds, sets determinism and plot style, and returns a `Context`.

Every notebook has one parameter that decides what it runs, ``VIEW``:

- ``"committed"`` (the default): re-plot the committed full results on any CPU in seconds;
  nothing tracked is written (figures go to ``build/committed/``);
- ``"smoke"``: run the whole pipeline small on a CPU (synthetic corpus) into ``build/smoke/``;
- ``"full"``: train on a GPU and write ``results/`` and ``figures/``.

`Context.show(fig, slug)` saves a figure and displays exactly the bytes it saved, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nlcore import paths


@dataclass(frozen=True)
class Context:
    """Where one notebook's results come from and its figures go, and what it ran with."""

    stem: str
    view: str
    seed: int
    device: str
    fig_dir: Path
    results_dir: Path
    config: object = None  # the TrainConfig this view's experiment starts from

    @property
    def mode(self) -> str:
        """The experiment mode whose results this view shows: committed and full show full runs."""
        return "smoke" if self.view == "smoke" else "full"

    @property
    def trains(self) -> bool:
        """Whether this view runs experiments (smoke, full) or only reads committed results."""
        return self.view != "committed"

    @property
    def reuse_results(self) -> bool:
        return not self.trains

    def show(self, fig, slug: str) -> None:
        """Save `fig` as `<fig_dir>/<slug>.png` (+ .pdf) and display that PNG: what a reader sees is
        byte for byte the saved figure, shown once."""
        from IPython.display import Image, display

        from nlcore.report.plotting import save_figure

        saved = save_figure(fig, slug, self.fig_dir)
        png = next(p for p in saved if p.suffix == ".png")
        display(Image(data=png.read_bytes(), format="png"))


def _notebook_stems() -> list[str]:
    """The published notebooks and the drafts (`notebooks/drafts/`: waiting for their full results)."""
    return sorted({p.stem for folder in (paths.NOTEBOOKS, paths.NOTEBOOKS / "drafts")
                   for p in folder.glob("[0-9A-Z][0-9]_*.py")})


def _inline_figures() -> None:
    """Inside a Jupyter kernel, render pyplot figures inline (the runner's MPLBACKEND=Agg would
    otherwise leave the executed notebook without images), without a software version in the PNG."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None and getattr(shell, "kernel", None) is not None:
        shell.run_line_magic("matplotlib", "inline")
        shell.run_line_magic("config", "InlineBackend.print_figure_kwargs = {'bbox_inches': 'tight', "
                                       "'metadata': {'Software': None}}")


def setup(stem: str, view: str = "committed", seed: int = 0, device: str = "auto") -> Context:
    """Seed, set determinism and plot style, print where results come from; return the Context."""
    from nlcore import repro
    from nlcore.report import plotting
    from nlcore.report.notebook import cite

    paths.check_view(view)
    stems = _notebook_stems()
    if stem not in stems:
        raise ValueError(f"setup({stem!r}): no notebook notebooks/{stem}.py; notebooks are {stems}")
    dev = repro.pick_device(device if view != "committed" else "cpu")
    cite.reset(stem)
    repro.set_determinism(True, warn_only=(view == "full"))
    repro.seed_everything(seed)
    plotting.apply_style()
    _inline_figures()
    results_root, figures_root = paths.view_roots(view)
    ctx = Context(stem=stem, view=view, seed=int(seed), device=str(dev), fig_dir=figures_root / stem,
                  results_dir=results_root / stem, config=_preset_for(stem, "smoke" if view == "smoke" else "full"))
    if view == "committed":  # nothing that changes between runs: the executed notebook is committed
        print(f"nlcore notebook {stem}: VIEW = 'committed', re-plotting the committed results in results/ "
              f"(set VIEW = 'smoke' to run it small on this CPU, 'full' to train on a GPU)")
    else:
        import torch

        git = repro.git_info()
        sha = (git["revision"] or "unknown")[:10] + ("+dirty" if git["dirty"] else "")
        print(f"nlcore notebook {stem} | VIEW {view!r} | device {dev} | torch {torch.__version__} | git {sha} "
              f"| seed {seed}\n  figures -> {relpath(ctx.fig_dir)}   results -> {relpath(ctx.results_dir)}")
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
