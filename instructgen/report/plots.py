"""The page's plots as inline SVG markup (matplotlib), so the page needs no other file."""

from __future__ import annotations

import io


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    # Glyphs as paths: the SVG needs no font; a fixed salt keeps the markup reproducible.
    plt.rcParams.update({"svg.fonttype": "path", "svg.hashsalt": "instructgen-report"})
    return plt


def _svg(fig) -> str:
    """The figure as SVG markup without the XML prolog, ready to sit inside HTML."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    fig.clear()
    text = buf.getvalue()
    return text[text.index("<svg") :]


def training_curves(stage: str, log: list[dict], label: str) -> str:
    """Loss and learning rate against the optimizer step of one stage's train_log.jsonl."""
    plt = _pyplot()
    fig, (loss_ax, lr_ax) = plt.subplots(1, 2, figsize=(9, 3))
    for ax, field, color in ((loss_ax, "loss", "C0"), (lr_ax, "lr", "C1")):
        points = [(row["step"], row[field]) for row in log if "step" in row and field in row]
        ax.plot(*zip(*points, strict=True), marker="o", markersize=3, color=color)
    loss_ax.set(xlabel="optimizer step", ylabel="training loss", title=f"{stage}: loss")
    lr_ax.set(xlabel="optimizer step", ylabel="learning rate", title=f"{stage}: learning rate")
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    for ax in (loss_ax, lr_ax):
        ax.grid(alpha=0.3)
    if label:
        fig.suptitle(label, fontsize=9, color="#a40000", y=1.02)
    svg = _svg(fig)
    plt.close(fig)
    return svg


def bars_beside_published(
    title: str,
    groups: list[str],
    measured: list[float | None],
    published: list[float | None],
    measured_label: str,
    published_label: str,
    ylabel: str,
) -> str:
    """Grouped bars: this run's figure and the published one per group (a gap where none)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.3 * len(groups) + 2.5, 3.2))
    width = 0.38
    x = range(len(groups))
    ax.bar([i - width / 2 for i in x], [v or 0 for v in measured], width, label=measured_label)
    ax.bar(
        [i + width / 2 for i in x],
        [v or 0 for v in published],
        width,
        label=published_label,
        color="0.7",
        hatch="//",
    )
    ax.set_xticks(list(x), groups)
    ax.set(ylabel=ylabel, title=title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    svg = _svg(fig)
    plt.close(fig)
    return svg
