"""The evaluation plots: the judge's scores.png and POPE's bars beside result.json."""

from __future__ import annotations

from pathlib import Path

from instructgen.eval.pope import METRICS
from instructgen.files import atomic_writer


def plot_scores(summary: dict, path: Path, reference: str, candidate: str) -> None:
    """Grouped bars (reference, candidate) per category and overall, on the judge's 1-10
    scale, with each group's relative score written above it."""
    plt = _pyplot()
    groups = [k for k, v in summary.items() if isinstance(v, dict) and "relative" in v]
    groups = [k for k in groups if k != "all"] + ["all"]
    ref = [summary[g]["reference_mean"] or 0 for g in groups]
    cand = [summary[g]["candidate_mean"] or 0 for g in groups]
    x = range(len(groups))
    width = 0.38
    fig, ax = plt.subplots(figsize=(1.7 * len(groups) + 2.5, 4.2))
    ax.bar([i - width / 2 for i in x], ref, width, label=f"reference: {reference}", color="0.65")
    ax.bar([i + width / 2 for i in x], cand, width, label=f"candidate: {candidate}", color="C0")
    for i, g in enumerate(groups):
        s = summary[g]
        note = "-" if s["relative"] is None else f"{s['relative']:.1f}%"
        if s["unparsed"]:
            note += f"\n{s['unparsed']} unparsed"
        ax.text(i, max(ref[i], cand[i]) + 0.25, note, ha="center", va="bottom", fontsize=10)
    ax.set_xticks(list(x), [f"{g}\n(n={summary[g]['n']})" for g in groups])
    ax.set_ylim(0, 12)
    ax.set_yticks(range(0, 11, 2))
    ax.set_ylabel("mean judge score (1-10)")
    judge = summary.get("judge", {})
    ax.set_title(
        f"Relative score = candidate / reference (judge {judge.get('model', '?')}"
        + (", both orders" if judge.get("swap") else "")
        + (f", {judge['compat']} arithmetic" if judge.get("compat") else "")
        + ")",
        fontsize=10,
    )
    ax.legend(loc="upper left", fontsize=8, frameon=False, ncols=2)
    ax.spines[["top", "right"]].set_visible(False)
    _save_png(fig, path)


def plot_pope(result: dict, path: Path) -> None:
    """Bars of accuracy, precision, recall, F1 and yes ratio per split, with the published
    LLaVA-1.5-7B F1 as a labelled line."""
    plt = _pyplot()
    splits = list(result["splits"])
    metrics = METRICS
    width = 0.8 / len(metrics)
    fig, ax = plt.subplots(figsize=(1.9 * len(splits) + 2.5, 4.2))
    for k, metric in enumerate(metrics):
        xs = [i + (k - (len(metrics) - 1) / 2) * width for i in range(len(splits))]
        values = [_or_nan(result["splits"][s][metric]) for s in splits]
        ax.bar(xs, values, width, label=metric.replace("_", " "), color=f"C{k}")
    for name, value in result.get("published", {}).items():
        ax.axhline(value / 100, color="0.3", linestyle="--", linewidth=1)
        ax.text(len(splits) - 0.5, value / 100 + 0.01, name, ha="right", va="bottom", fontsize=8)
    ax.set_xticks(
        range(len(splits)),
        [
            f"{s}\n(n={result['splits'][s]['n']}, missing {result['splits'][s]['missing']})"
            for s in splits
        ],
    )
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("fraction")
    ax.set_title("POPE: yes is the positive class", fontsize=10)
    ax.legend(loc="upper left", fontsize=8, frameon=False, ncols=5)
    ax.spines[["top", "right"]].set_visible(False)
    _save_png(fig, path)


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else value  # no bar for a split with no answer


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save_png(fig, path: Path) -> None:
    """Lay `fig` out, write it to `path` atomically as PNG, and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_writer(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
