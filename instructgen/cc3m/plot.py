"""The before/after noun-phrase frequency plot of the CC3M filter (np_hist.png)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from instructgen.files import atomic_writer

PLOT_POINTS = 2000  # log-spaced ranks drawn per curve: millions of phrases would be slow to draw


def plot_phrase_frequency(
    before: np.ndarray,
    after: np.ndarray,
    captions: tuple[int, int],
    path: Path,
    min_freq: int,
    max_per_phrase: int,
) -> None:
    """Write a PNG: left, phrase frequency by rank; right, how many phrases have each frequency.

    `before` and `after` hold, per phrase id, the number of captions containing the phrase in
    the whole input and in the pool; `captions` counts the captions of each; both axes are
    logarithmic.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    sides = [
        # hollow "before" markers stay visible under the filled "after" ones
        (
            "before filtering",
            before,
            captions[0],
            "tab:gray",
            {"s": 36, "facecolors": "none", "edgecolors": "tab:gray"},
        ),
        ("after filtering", after, captions[1], "tab:blue", {"s": 10, "color": "tab:blue"}),
    ]
    fig, (by_rank, by_freq) = plt.subplots(1, 2, figsize=(13, 5.2), layout="constrained")
    for name, freq, n_captions, color, marker in sides:
        counts = np.sort(freq[freq > 0])[::-1]
        if not len(counts):
            continue
        label = f"{name}: {n_captions:,} captions, {len(counts):,} unique phrases"
        ranks = _log_spaced(len(counts))
        by_rank.plot(ranks + 1, counts[ranks], color=color, lw=2, label=label)
        values, phrases = np.unique(counts, return_counts=True)
        by_freq.scatter(values, phrases, label=name, **marker)
    for axis in (by_rank, by_freq):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.grid(True, which="major", alpha=0.3)
    by_rank.axhline(min_freq, color="tab:red", ls=":", lw=1.2, label=f"min frequency {min_freq}")
    by_rank.axhline(
        max_per_phrase, color="tab:green", ls="--", lw=1.2, label=f"max per phrase {max_per_phrase}"
    )
    by_rank.set_title("Noun-phrase frequency by rank")
    by_rank.set_xlabel("phrase rank (most frequent first)")
    by_rank.set_ylabel("captions containing the phrase")
    by_rank.legend(loc="upper right", fontsize=9)
    by_freq.axvline(min_freq, color="tab:red", ls=":", lw=1.2)
    by_freq.axvline(max_per_phrase, color="tab:green", ls="--", lw=1.2)
    by_freq.set_title("How many phrases have each frequency")
    by_freq.set_xlabel("captions containing the phrase")
    by_freq.set_ylabel("number of unique phrases")
    by_freq.legend(loc="upper right", fontsize=9)
    fig.suptitle("CC3M noun phrases before and after the frequency-balanced filter", fontsize=13)
    with atomic_writer(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def _log_spaced(n: int) -> np.ndarray:
    """Up to PLOT_POINTS distinct indices in [0, n), evenly spaced on a log scale."""
    return np.unique(np.geomspace(1, n, num=min(n, PLOT_POINTS)).astype(np.int64) - 1)
