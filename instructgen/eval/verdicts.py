"""A judge's reply -> the two scores it gives, or None when it gives none we can read.

The judge is asked for two 1-10 scores on the first line. Rules, in order:
1. the first line holds exactly two scores: `8 9`, `8, 9`, `8/10 9/10`, `8 and 9`, `(8, 9)`,
   `8 9.` (markdown emphasis and a `Scores:` label are ignored);
2. else the last `Assistant 1: X` and the last `Assistant 2: Y` (a scores block, as judges
   write when they reason first: `Scores:` / `Assistant 1: 10` / `Assistant 2: 4`; or both on
   one line: `Assistant 1: 8/10, Assistant 2: 9/10`);
3. else unparsed.
A score outside 0-10 is no score.
"""

from __future__ import annotations

import re

_SCORE = r"(\d+(?:\.\d+)?)(?:\s*/\s*10)?"
_FIRST_LINE = re.compile(
    rf"^(?:scores?\s*:\s*)?[(\[]?{_SCORE}\s*(?:[,;|]\s*|\s+and\s+|\s+){_SCORE}[)\]]?\.?$", re.I
)
_ASSISTANT = re.compile(
    rf"(?:^|[\s,;(])[*#-]*assistant[ \t]*([12])[ \t*]*:[ \t*]*{_SCORE}\b", re.I | re.M
)


def parse_verdict(text: str) -> tuple[float, float] | None:
    """(score of the first answer shown, score of the second), or None."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return None
    first = re.sub(r"[*_`]", "", lines[0]).strip("# ").strip()
    m = _FIRST_LINE.match(first)
    if m:
        return _checked(float(m.group(1)), float(m.group(2)))
    found: dict[str, float] = {}
    for m in _ASSISTANT.finditer(text):
        found[m.group(1)] = float(m.group(2))  # the last one of each wins
    if len(found) == 2:
        return _checked(found["1"], found["2"])
    return None


def _checked(first: float, second: float) -> tuple[float, float] | None:
    return (first, second) if 0 <= first <= 10 and 0 <= second <= 10 else None
