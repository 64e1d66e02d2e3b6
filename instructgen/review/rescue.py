"""Rescuing a quarantined response: text a person fixed by hand -> question/answer turns.

The person writes the response in the layout our prompts ask for: a line starting
`Question:`, then a line starting `Answer:`; an answer runs until the next `Question:` line.
"""

from __future__ import annotations

import re

from instructgen.errors import InstructgenError

DETAIL_QUESTION = "Describe this image in detail."
_QUESTION = re.compile(r"^\s*question\s*:\s*", re.IGNORECASE)
_ANSWER = re.compile(r"^\s*answer\s*:\s*", re.IGNORECASE)
_ONE_PAIR_TASKS = ("detail", "complex_reasoning")


class RescueError(InstructgenError):
    """The rescue text is not in Question:/Answer: form; the message says where."""


def turns_from_text(task: str, text: str) -> list[tuple[str, str]]:
    """Split `Question:` / `Answer:` text into (question, answer) pairs, stripped.

    `detail` and `complex_reasoning` take exactly one pair; `conversation` one or more.
    """
    pairs: list[list[str]] = []
    part = None  # index into the current pair: 0 question, 1 answer
    for n, line in enumerate(text.replace("\r\n", "\n").split("\n"), 1):
        if _QUESTION.match(line):
            pairs.append([_QUESTION.sub("", line, count=1), ""])
            part = 0
        elif _ANSWER.match(line) and part == 0:
            pairs[-1][1] = _ANSWER.sub("", line, count=1)
            part = 1
        elif part is None:
            if line.strip():
                raise RescueError(f"line {n}: text before the first 'Question:' line")
        else:
            pairs[-1][part] += "\n" + line
    if not pairs:
        raise RescueError("no 'Question:' line: write 'Question: ...' then 'Answer: ...'")
    result = [(q.strip(), a.strip()) for q, a in pairs]
    for i, (q, a) in enumerate(result, 1):
        if not q or not a:
            missing = "question" if not q else "answer"
            raise RescueError(f"turn {i} has an empty {missing}")
    if task in _ONE_PAIR_TASKS and len(result) != 1:
        raise RescueError(f"a {task} record has exactly one question and one answer")
    return result


def rescue_draft(task: str, raw: str) -> str:
    """The text the rescue form starts from: the raw response, put in Question/Answer form."""
    raw = raw.strip()
    if any(_QUESTION.match(line) for line in raw.split("\n")):
        return raw
    question = DETAIL_QUESTION if task == "detail" else ""
    return f"Question: {question}\nAnswer: {raw}"
