"""scores.png: per category, the judge's mean score of the reference and the candidate."""

from __future__ import annotations

from pathlib import Path

from instructgen.files import atomic_writer


def plot_scores(summary: dict, path: Path, reference: str, candidate: str) -> None:
    """Grouped bars (reference, candidate) per category and overall, on the judge's 1-10
    scale, with each group's relative score written above it."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

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
    fig.tight_layout()
    with atomic_writer(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
