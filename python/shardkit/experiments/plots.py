"""The experiments' figures (matplotlib, Agg backend), written through the atomic writer.

Each function returns the file name it wrote; the reports say what each shows.
"""

from __future__ import annotations

from pathlib import Path

from shardkit import atomic


def _figure(width: float = 6.0, height: float = 4.0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, plt.subplots(figsize=(width, height))


def _save(plt, fig, path: Path) -> str:
    fig.tight_layout()
    atomic.write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return path.name


def learning_curves(path: Path, curves: dict[str, list[dict]], title: str) -> str:
    """Training loss against step, one line per training run (``log_history`` entries)."""
    plt, (fig, ax) = _figure()
    for name, history in curves.items():
        points = [(e["step"], e["loss"]) for e in history if "loss" in e]
        if points:
            ax.plot(*zip(*points), label=name)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (nats/token)")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(plt, fig, path)


def grouped_bars(
    path: Path,
    groups: list[str],
    series: dict[str, list[float]],
    title: str,
    ylabel: str = "exact-match accuracy (%)",
    chance: float | None = None,
) -> str:
    """Bars of ``series`` (name -> one value per group, in %) side by side per group."""
    plt, (fig, ax) = _figure(max(6.0, 1.1 * len(groups) + 2), 4.0)
    width = 0.8 / max(1, len(series))
    for k, (name, values) in enumerate(series.items()):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(groups))]
        bars = ax.bar(xs, values, width, label=name)
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    if chance is not None:
        ax.axhline(chance, color="gray", ls="--", lw=1, label="chance")
    ax.set_xticks(range(len(groups)), groups, fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def power_law(
    path: Path, params: list[float], losses: list[float], fit: dict, title: str
) -> str:
    """Measured (N, L) on log-log axes with the fitted L(N) = (N_c / N)^alpha (and the fit with a constant)."""
    import numpy as np

    plt, (fig, ax) = _figure()
    ax.loglog(params, losses, "o", label="measured (held-out loss)")
    grid = np.geomspace(min(params) / 1.5, max(params) * 1.5, 100)
    ax.loglog(
        grid,
        (fit["N_c"] / grid) ** fit["alpha_N"],
        label=f"(N_c/N)^α, α={fit['alpha_N']:.3f}, R²={fit['r2']:.3f}",
    )
    if fit.get("with_constant"):
        c = fit["with_constant"]
        ax.loglog(
            grid,
            c["L_inf"] + (c["N_c"] / grid) ** c["alpha_N"],
            "--",
            label=f"L∞ + (N_c/N)^α, α={c['alpha_N']:.3f}, L∞={c['L_inf']:.2f}",
        )
    ax.set_xlabel("non-embedding parameters N")
    ax.set_ylabel("held-out loss (nats/token)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return _save(plt, fig, path)
