"""ScienceQA as LLaVA training data (prompt format codes), answer extraction and scoring.

Pure functions over `Problem` records; reading the official and Hugging Face layouts and the
answer files is in `files.py`. A format code is `<input>-<output>`: input letters
C (context), Q (question), M (options), one line each; output letters A (the answer sentence),
L (lecture), E (explanation), in the order written.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pandas as pd

from instructgen.contracts import IMAGE_TOKEN
from instructgen.errors import InputError

INPUT_LETTERS = {"C": "context", "Q": "question", "M": "options"}
OUTPUT_LETTERS = {"A": "answer sentence", "L": "lecture", "E": "explanation"}
DEFAULT_FORMAT = "QCM-LEA"  # reasoning before the answer, as in the paper
OPTION_LETTERS = string.ascii_uppercase
# Answer-only formats ask for the letter; the phrasing is ours.
LETTER_INSTRUCTION = "Reply with the letter of the correct option."
QUESTION_CATEGORY = "scienceqa"

# The breakdown groups of the paper's table, in its column order.
GROUPS = ("NAT", "SOC", "LAN", "TXT", "IMG", "NO", "G1-6", "G7-12", "Avg")
SUBJECTS = {"NAT": "natural science", "SOC": "social science", "LAN": "language science"}
# Liu et al., "Visual Instruction Tuning" (NeurIPS 2023): the ScienceQA table, test split.
_LLAVA = (90.36, 95.95, 88.00, 89.49, 88.00, 90.66, 90.93, 90.90, 90.92)
_LLAVA_GPT4_JUDGE = (91.56, 96.74, 91.09, 90.62, 88.99, 93.52, 92.73, 92.16, 92.53)
PUBLISHED = {"LLaVA (published)": _LLAVA, "LLaVA+GPT-4 judge (published)": _LLAVA_GPT4_JUDGE}

_ANSWER_SENTENCE = re.compile(r"The answer is ([A-Z])\.")


@dataclass(frozen=True)
class Problem:
    """One ScienceQA problem, as both layouts hold it."""

    pid: str  # the official problem id, or `{split}-{row}` for the parquet layout
    question: str
    choices: tuple[str, ...]
    answer: int  # 0-based index into choices
    hint: str  # the text context; "" when there is none
    image: str | None  # path relative to the images folder, None for a text question
    subject: str  # natural science, social science or language science
    grade: int  # 1 to 12
    lecture: str
    solution: str


@dataclass(frozen=True)
class PromptFormat:
    """A parsed format code such as QCM-LEA."""

    code: str
    inputs: str  # letters of CQM, in order
    outputs: str  # letters of ALE, in order

    @property
    def answer_only(self) -> bool:
        """QCM-A, CQM-A: the prompt asks for the option's letter."""
        return self.outputs == "A"


def parse_format(code: str) -> PromptFormat:
    """Parse `<input>-<output>` (e.g. QCM-LEA); an unknown or repeated letter raises InputError."""
    inputs, sep, outputs = code.strip().upper().partition("-")
    if not sep or not inputs or not outputs or "-" in outputs:
        raise InputError(
            f"format code {code!r}: expected <input>-<output>, e.g. QCM-LEA or QCM-A "
            "(input letters C, Q, M; output letters A, L, E)"
        )
    for side, letters, known in (
        ("input", inputs, INPUT_LETTERS),
        ("output", outputs, OUTPUT_LETTERS),
    ):
        for letter in letters:
            if letter not in known:
                names = ", ".join(f"{k} {v}" for k, v in known.items())
                raise InputError(
                    f"format code {code!r}: unknown {side} letter {letter!r} "
                    f"({side} letters: {names})"
                )
        if len(set(letters)) != len(letters):
            raise InputError(f"format code {code!r}: an {side} letter is repeated")
    return PromptFormat(code=f"{inputs}-{outputs}", inputs=inputs, outputs=outputs)


def options_text(choices: Iterable[str]) -> str:
    """`(A) first (B) second ...`."""
    return " ".join(f"({OPTION_LETTERS[i]}) {c}" for i, c in enumerate(choices))


def human_turn(problem: Problem, fmt: PromptFormat) -> str:
    """The question as the model sees it, one line per input letter, without the image token."""
    lines = []
    for letter in fmt.inputs:
        if letter == "C":
            lines.append(f"Context: {problem.hint.strip() or 'N/A'}")
        elif letter == "Q":
            lines.append(f"Question: {problem.question.strip()}")
        else:
            lines.append(f"Options: {options_text(problem.choices)}")
    if fmt.answer_only:
        lines.append(LETTER_INSTRUCTION)
    return "\n".join(lines)


def gpt_turn(problem: Problem, fmt: PromptFormat) -> str:
    """The target answer, one part per output letter; an empty lecture or solution is left out."""
    parts = {
        "A": f"The answer is {OPTION_LETTERS[problem.answer]}.",
        "L": problem.lecture.strip(),
        "E": problem.solution.strip(),
    }
    return "\n".join(parts[letter] for letter in fmt.outputs if parts[letter])


def llava_record(problem: Problem, fmt: PromptFormat) -> dict | None:
    """One LLaVA training record; None when the format leaves the answer empty."""
    answer = gpt_turn(problem, fmt)
    if not answer:
        return None
    question = human_turn(problem, fmt)
    record: dict = {"id": problem.pid}
    if problem.image is not None:
        record["image"] = problem.image
        question = f"{IMAGE_TOKEN}\n{question}"
    record["conversations"] = [
        {"from": "human", "value": question},
        {"from": "gpt", "value": answer},
    ]
    return record


def question_line(problem: Problem, fmt: PromptFormat) -> dict:
    """One line of the questions file `answer` reads: question_id, image, text, category.

    `text` is the human turn without the image token (the answering model adds it); a text
    question has no `image` key, like a text record.
    """
    line: dict = {"question_id": problem.pid}
    if problem.image is not None:
        line["image"] = problem.image
    line["text"] = human_turn(problem, fmt)
    line["category"] = QUESTION_CATEGORY
    return line


def quote_pids(pids: list[str], shown: int = 10) -> str:
    """The first few pids for a message: `4, 5, 11 and 120 more`."""
    more = f" and {len(pids) - shown:,} more" if len(pids) > shown else ""
    return ", ".join(pids[:shown]) + more


# --- answer extraction ---


@dataclass(frozen=True)
class Extraction:
    """The choice read from a model's answer: an index, or -1 and why."""

    index: int
    reason: str | None = None  # no_match, several_matches or beyond_options when index is -1


def extract_choice(text: str, n_choices: int) -> Extraction:
    """Read the chosen option from an answer text, by the rules in order (no guessing).

    1. the stripped text is exactly one of the option letters;
    2. it starts with an option letter followed by `.`;
    3. `The answer is X.` occurs exactly once, and X is an option letter.
    Anything else is unparsed.
    """
    letters = OPTION_LETTERS[:n_choices]
    t = text.strip()
    if len(t) == 1 and t in letters:
        return Extraction(letters.index(t))
    if len(t) >= 2 and t[0] in letters and t[1] == ".":
        return Extraction(letters.index(t[0]))
    found = _ANSWER_SENTENCE.findall(t)
    if len(found) > 1:
        return Extraction(-1, "several_matches")
    if len(found) == 1:
        if found[0] in letters:
            return Extraction(letters.index(found[0]))
        return Extraction(-1, "beyond_options")
    if len(t) == 1 and t in OPTION_LETTERS:
        return Extraction(-1, "beyond_options")
    return Extraction(-1, "no_match")


# --- scoring ---


@dataclass(frozen=True)
class Score:
    """Accuracy over one split, with the paper's breakdown."""

    correct: int
    count: int  # pids of the split present in the problems
    results: dict[str, int]  # pid -> chosen index, -1 when missing or unparsed
    unparsed: dict[str, str]  # pid -> reason
    missing: list[str]  # pids with no answer
    ignored: int  # answers whose pid is not among the split's problems
    breakdown: dict[str, float | None]  # group -> percent, 2 decimals; None for an empty group
    group_sizes: dict[str, int]
    outputs: dict[str, str]  # pid -> the answer text scored, as LLaVA's result files keep it

    @property
    def acc(self) -> float:
        """Accuracy in percent."""
        return 100.0 * self.correct / self.count if self.count else 0.0

    def to_json(self) -> dict:
        """result.json: acc, correct, count, unparsed, missing, results, breakdown (+ details,
        and `outputs` as in LLaVA's result files, so that the file scores again as answers)."""
        return {
            "acc": self.acc,
            "correct": self.correct,
            "count": self.count,
            "unparsed": list(self.unparsed),
            "missing": self.missing,
            "results": self.results,
            "breakdown": self.breakdown,
            "unparsed_reasons": self.unparsed,
            "group_sizes": self.group_sizes,
            "ignored_answers": self.ignored,
            "outputs": self.outputs,
        }


def score_answers(problems: list[Problem], answers: Mapping[str, str]) -> Score:
    """Score answer texts ({pid: text}) against the problems of a split."""
    results: dict[str, int] = {}
    unparsed: dict[str, str] = {}
    missing: list[str] = []
    for p in problems:
        text = answers.get(p.pid)
        if text is None:
            missing.append(p.pid)
            results[p.pid] = -1
            continue
        got = extract_choice(text, len(p.choices))
        results[p.pid] = got.index
        if got.reason:
            unparsed[p.pid] = got.reason
    correct = [results[p.pid] == p.answer for p in problems]
    breakdown, sizes = accuracy_breakdown(problems, correct)
    pids = {p.pid for p in problems}
    return Score(
        correct=sum(correct),
        count=len(problems),
        results=results,
        unparsed=unparsed,
        missing=missing,
        ignored=sum(1 for pid in answers if pid not in pids),
        breakdown=breakdown,
        group_sizes=sizes,
        outputs={p.pid: answers[p.pid] for p in problems if p.pid in answers},
    )


def accuracy_breakdown(
    problems: list[Problem], correct: list[bool]
) -> tuple[dict[str, float | None], dict[str, int]]:
    """Percent correct per group of the paper's table (2 decimals) and each group's size."""
    df = pd.DataFrame(
        {
            "correct": correct,
            "subject": [p.subject for p in problems],
            "text": [bool(p.hint.strip()) for p in problems],
            "image": [p.image is not None for p in problems],
            "grade": [p.grade for p in problems],
        }
    )
    masks = {code: df.subject == subject for code, subject in SUBJECTS.items()}
    masks["TXT"] = df.text
    masks["IMG"] = df.image
    masks["NO"] = ~df.text & ~df.image
    masks["G1-6"] = df.grade <= 6
    masks["G7-12"] = df.grade >= 7
    masks["Avg"] = pd.Series(True, index=df.index)
    breakdown: dict[str, float | None] = {}
    sizes: dict[str, int] = {}
    for group in GROUPS:
        chosen = df.correct[masks[group]]
        sizes[group] = int(len(chosen))
        breakdown[group] = round(100.0 * chosen.mean(), 2) if len(chosen) else None
    return breakdown, sizes


def breakdown_table(score: Score, label: str) -> pd.DataFrame:
    """This run's breakdown beside the paper's published rows, one row each, groups as columns."""
    rows = {label: [score.breakdown[g] for g in GROUPS]}
    rows.update({name: list(values) for name, values in PUBLISHED.items()})
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(GROUPS))
