"""Rendering a MemoryEstimate: the CLI table and the optional PNG bar chart."""

from __future__ import annotations

from typing import Any


def format_bytes(nbytes: float) -> str:
    """``1536`` -> ``'1.50 KiB'``: binary units."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(nbytes) < 1024:
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.2f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.2f} TiB"


def format_table(estimate: Any) -> str:
    """Fixed-width table: component, bytes per rank, bytes per parameter, explanation."""
    inputs = estimate.inputs
    title = (
        f"{estimate.params:,} params | {inputs['optimizer']} {inputs['precision']} | {inputs['strategy']}"
        f" x {inputs['world_size']} ranks | batch {inputs['batch']} x seq {inputs['seq_len']} | per rank"
    )
    if inputs.get("recipe", "pretrain") != "pretrain":
        title = f"{inputs['recipe'].upper()} | " + title.replace(" params |", " policy params |", 1)
    rows = [
        (i.name, format_bytes(i.bytes), f"{i.bytes / estimate.params:.2f}" if estimate.params else "-", i.explanation)
        for i in estimate.items
    ]
    rows.append(
        (
            "model states",
            format_bytes(estimate.model_state_bytes),
            f"{estimate.model_state_bytes_per_param:.2f}",
            "params + grads + master + optimizer state",
        )
    )
    rows.append(
        ("total", format_bytes(estimate.total_bytes), f"{estimate.total_bytes / max(estimate.params, 1):.2f}", "")
    )
    header = ("component", "per rank", "B/param", "why")
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(3)]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(header, widths)) + "  " + header[3]]
    lines.append("-" * (sum(widths) + 6 + 40))
    for index, row in enumerate(rows):
        if index == len(estimate.items):
            lines.append("-" * (sum(widths) + 6 + 40))
        lines.append(
            f"{row[0].ljust(widths[0])}  {row[1].rjust(widths[1])}  {row[2].rjust(widths[2])}  {row[3]}".rstrip()
        )
    return "\n".join(lines)


def plot(estimates: dict[str, Any], path: str) -> None:
    """Stacked bars, one per labelled estimate, written to ``path`` as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from shardkit.atomic import write_atomic

    labels = list(estimates)
    names = [item.name for item in next(iter(estimates.values())).items]
    fig, ax = plt.subplots(figsize=(1.6 * len(labels) + 3, 4.5))
    bottoms = [0.0] * len(labels)
    for name in names:
        heights = [estimates[label][name] / 2**30 for label in labels]
        ax.bar(labels, heights, bottom=bottoms, label=name)
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    ax.set_ylabel("GiB per rank")
    ax.set_title("shardkit memory estimate")
    ax.legend(fontsize="small")
    fig.tight_layout()
    try:
        write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
