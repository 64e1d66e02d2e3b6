"""One model response -> question/answer turns, per task, plus the validation flags.

Pure functions, no I/O. The response formats are the ones our prompts ask for:
- conversation: turns of a `Question:` line then an `Answer:` line (answers may span lines);
- complex_reasoning: exactly one `Question:` / `Answer:` pair;
- detail: only the description (the question is drawn later from the instruction list).

Tolerant of what GPT-4-class models actually write (markdown, `Q1.`/`**Question 2:**`/`1.`
numbering, extra whitespace, a short preamble, a closing remark); strict about what would
poison training: a question without an answer, an answer without a question, the system
prompt echoed back, a refusal in place of an answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from instructgen.contracts import IMAGE_TOKEN
from instructgen.curate.category_words import categories_named, words_for

# Quarantine reason codes (quarantine.jsonl `reason`); the parser emits the last five.
REASONS = (
    "failed_request",
    "finish_length",
    "content_filter",
    "duplicate",
    "unknown_request",
    "empty",
    "unparseable",
    "no_turns",
    "refusal",
    "system_echo",
)

# (short, long) answer limits in words: an answer under `short` words or over `long` words
# is flagged. Conversation answers are naturally brief; the others are paragraphs.
ANSWER_WORD_LIMITS: dict[str, tuple[int, int]] = {
    "conversation": (3, 200),
    "detail": (25, 350),
    "complex_reasoning": (15, 350),
}
# A text before the first question longer than this (words) is not a mere preamble.
MAX_PREAMBLE_WORDS = 40
# A whole response this short (words) that opens with a refusal phrase is a refusal.
MAX_REFUSAL_WORDS = 60
# Echo check: system-prompt sentences are cut into chunks of this many words.
ECHO_CHUNK_WORDS = 10


@dataclass(frozen=True, slots=True)
class Turn:
    """One question and its answer; `question` is "" for a detail description."""

    question: str
    answer: str


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a response cannot become a record: a reason code (REASONS) and an explanation."""

    reason: str
    detail: str


Parsed = tuple[Turn, ...] | Rejection

_LABEL = re.compile(
    r"^[\s>#*_•-]*"  # markdown: quote, heading, bullet, bold
    r"(?:\(?(?P<num>\d{1,2})[.)]\s*)?"  # list numbering: "1." "2)"
    r"[*_]*\s*"
    r"(?P<kind>question|answer|user|human|assistant|gpt|q|a)"
    r"\s*(?P<idx>\d{1,2})?\s*[*_]*\s*"
    r"(?P<sep>[:.)])"
    r"\s*[*_]*\s*(?P<rest>.*)$",
    re.IGNORECASE,
)
_QUESTION_KINDS = {"question", "q", "user", "human"}
_NUMBERED_QUESTION = re.compile(r"^[\s>#*_-]*\(?\d{1,2}[.)]\s*[*_]*\s*(?P<rest>.+\?)[\s*_]*$")
_RULE = re.compile(r"^\s*([-*_=])\1{2,}\s*$")
_BOLD = re.compile(r"\*\*|__")
_CLOSING = re.compile(
    r"^(i hope|hope this|let me know|feel free|if you have any|is there anything else|"
    r"these questions|this conversation|the conversation above|in this conversation)",
    re.IGNORECASE,
)
_HEADING = re.compile(r"^\s*(#+\s*.*|[*_]{2}[^*_]{1,80}[*_]{2}:?|[^.!?]{1,60}:)\s*$")
_DETAIL_LABEL = re.compile(r"^\s*[*_]*(?:detailed )?(?:description|answer)[*_]*\s*:[*_]*\s*", re.I)
_REFUSAL = re.compile(
    r"i'm sorry|i am sorry|i apologi[sz]e|\bas an ai\b|as a language model|\bi cannot\b|"
    r"\bi can't\b|\bi can not\b|\bi'm unable\b|\bi am unable\b|\bi'm not able\b|"
    r"\bi am not able\b|unable to (?:view|see|access) (?:the |this )?(?:image|picture|photo)"
)
# substrings every refusal phrase contains: a cheap test before the regex
_REFUSAL_HINTS = ("sorry", "apologi", "as an ai", "language model", "i can", "unable", "not able")
_NUMBER_PAIR = re.compile(r"[\[(]\s*[01]?\.\d+\s*,\s*[01]?\.\d+")
_COORDINATE_WORD = re.compile(r"\bcoordinates?\b")
_NEGATIONS = {"no", "not", "without", "nor", "any", "neither"}
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\n+")


def _clean_line(line: str) -> str:
    if "**" in line or "__" in line:
        line = _BOLD.sub("", line)
    if IMAGE_TOKEN in line:
        line = line.replace(IMAGE_TOKEN, "")
    return " ".join(line.split())  # collapses runs of spaces, tabs and no-break spaces


def _clean_block(lines: list[str]) -> str:
    """Lines -> text: spaces collapsed, rules dropped, one blank line between paragraphs."""
    out: list[str] = []
    for line in lines:
        text = "" if _RULE.match(line) else _clean_line(line)
        if text or (out and out[-1]):
            out.append(text)
    return "\n".join(out).strip()


def _drop_closing_remark(text: str) -> str:
    """Drop a last paragraph like "I hope this helps!" when there is more than one."""
    head, sep, last = text.rpartition("\n\n")
    return head.strip() if sep and _CLOSING.match(last) else text


def _label(line: str) -> tuple[str, str] | None:
    """("question"|"answer", rest of line) when `line` opens with a turn label, else None."""
    m = _LABEL.match(line)
    if not m:
        return None
    kind = m.group("kind").lower()
    # "A." or "Q)" open ordinary sentences and lists too; only "Q:"/"A:" or "Q1." are labels
    if m.group("sep") != ":" and not (m.group("idx") and len(kind) == 1):
        return None
    return ("question" if kind in _QUESTION_KINDS else "answer"), m.group("rest")


def _labelled_turns(lines: list[str]) -> Parsed:
    """Split on `Question:`/`Answer:` labels (and their variants); strict pairing."""
    turns: list[tuple[list[str], list[str]]] = []
    answered: list[bool] = []
    preamble: list[str] = []
    for line in lines:
        label = _label(line)
        if label and label[0] == "question":
            turns.append(([label[1]], []))
            answered.append(False)
        elif label:
            if not turns:
                return Rejection("unparseable", "an answer comes before any question")
            if answered[-1]:
                return Rejection("unparseable", f"question {len(turns)} has two answers")
            answered[-1] = True
            turns[-1][1].append(label[1])
        elif turns:
            (turns[-1][1] if answered[-1] else turns[-1][0]).append(line)
        else:
            preamble.append(line)
    if not turns:
        return ()
    if not any(answered) and all(any(x.strip() for x in q[1:]) for q, _ in turns):
        # labelled questions with unlabelled answers on the lines below them
        turns = [([q[0]], q[1:]) for q, _ in turns]
        answered = [True] * len(turns)
    if not all(answered):
        return Rejection("unparseable", f"question {answered.index(False) + 1} has no answer")
    if len(" ".join(preamble).split()) > MAX_PREAMBLE_WORDS:
        return Rejection("unparseable", "a long text comes before the first question")
    return _finish(turns)


def _numbered_turns(lines: list[str]) -> Parsed:
    """Unlabelled fallback: `1. What ...?` lines are questions, the lines below them answers."""
    turns: list[tuple[list[str], list[str]]] = []
    for line in lines:
        m = _NUMBERED_QUESTION.match(line)
        if m:
            turns.append(([m.group("rest")], []))
        elif turns:
            turns[-1][1].append(line)
    return _finish(turns) if turns else ()


def _finish(raw: list[tuple[list[str], list[str]]]) -> Parsed:
    turns = []
    for n, (q_lines, a_lines) in enumerate(raw, 1):
        question = " ".join(filter(None, (_clean_line(q) for q in q_lines if not _RULE.match(q))))
        answer = _clean_block(a_lines)
        if not question:
            return Rejection("unparseable", f"question {n} is empty")
        if not answer:
            return Rejection("unparseable", f"question {n} has an empty answer")
        turns.append(Turn(question, answer))
    last = turns[-1]
    turns[-1] = Turn(last.question, _drop_closing_remark(last.answer))
    return tuple(turns)


def parse_conversation(text: str) -> Parsed:
    """A multi-turn conversation: `Question:` / `Answer:` turns, in order."""
    lines = text.splitlines()
    turns = _labelled_turns(lines)
    if turns == ():
        turns = _numbered_turns(lines)
    if turns == ():
        return Rejection("no_turns", "no `Question:` line found")
    return turns


def parse_complex_reasoning(text: str) -> Parsed:
    """Exactly one question and its (possibly multi-paragraph) answer."""
    lines = text.splitlines()
    turns = _labelled_turns(lines)
    if turns == ():
        turns = _first_line_question(lines)
    if isinstance(turns, Rejection):
        return turns
    if not turns:
        return Rejection("no_turns", "no `Question:` line found")
    if len(turns) > 1:
        return Rejection("unparseable", f"expected one question, found {len(turns)}")
    return turns


def _first_line_question(lines: list[str]) -> Parsed:
    """Unlabelled fallback: a first line ending in "?" is the question, the rest the answer."""
    body = [line for line in lines if line.strip()]
    if len(body) >= 2 and _clean_line(body[0]).endswith("?"):
        return _finish([([body[0]], lines[lines.index(body[0]) + 1 :])])
    return ()


def parse_detail(text: str) -> Parsed:
    """A description only; a leading heading or `Description:` label is dropped."""
    lines = text.strip().splitlines()
    if any((label := _label(line)) and label[0] == "question" for line in lines):
        return Rejection("unparseable", "a detail description should not contain a question")
    if len(lines) > 1 and _HEADING.match(lines[0]) and not _DETAIL_LABEL.match(lines[0]):
        lines = "\n".join(lines[1:]).strip().splitlines()
    if lines:
        lines[0] = _DETAIL_LABEL.sub("", lines[0])
    description = _drop_closing_remark(_clean_block(lines))
    if not description:
        return Rejection("empty", "the description is empty")
    return (Turn("", description),)


PARSERS = {
    "conversation": parse_conversation,
    "detail": parse_detail,
    "complex_reasoning": parse_complex_reasoning,
}


def has_refusal(text_lower: str) -> bool:
    """True when lower-case `text_lower` contains a refusal phrase ("I'm sorry", "as an AI")."""
    return any(map(text_lower.__contains__, _REFUSAL_HINTS)) and bool(_REFUSAL.search(text_lower))


def has_coordinates(text_lower: str) -> bool:
    """True when `text_lower` leaks box coordinates: "[0.12, 0.3", "coordinates", "bounding box"."""
    return (
        "bounding box" in text_lower
        or ("coordinate" in text_lower and bool(_COORDINATE_WORD.search(text_lower)))
        or (("[" in text_lower or "(" in text_lower) and bool(_NUMBER_PAIR.search(text_lower)))
    )


def normalize_for_echo(text: str) -> str:
    """Lower case, straight apostrophes, single spaces: the form echo checks compare."""
    return " ".join(text.replace("\u2019", "'").lower().split())


def system_fragments(system_prompt: str) -> tuple[str, ...]:
    """Chunks of the system prompt's sentences (ECHO_CHUNK_WORDS words) to look for in replies.

    Sentences shorter than 8 words are skipped: short phrases recur in honest answers.
    """
    chunks = []
    for sentence in _SENTENCE_END.split(system_prompt):
        words = normalize_for_echo(sentence).split()
        if len(words) < 8:
            continue
        for i in range(0, len(words), ECHO_CHUNK_WORDS):
            chunk = words[i : i + ECHO_CHUNK_WORDS]
            if len(chunk) >= 8:
                chunks.append(" ".join(chunk))
    return tuple(dict.fromkeys(chunks))


def find_system_echo(text: str, fragments: tuple[str, ...]) -> str | None:
    """The first system-prompt fragment that `text` repeats verbatim, or None."""
    if not fragments:
        return None
    normalized = normalize_for_echo(text)
    if not any(map(normalized.__contains__, fragments)):  # the common case, at C speed
        return None
    return next(f for f in fragments if f in normalized)


def parse_response(task: str, text: str, echo_fragments: tuple[str, ...] = ()) -> Parsed:
    """Turns of one response for `task`, or the Rejection that quarantines it."""
    text = text.replace("\u2019", "'").strip()
    if not text:
        return Rejection("empty", "the response has no text")
    if has_refusal(text[:150].lower()) and len(text.split()) <= MAX_REFUSAL_WORDS:
        return Rejection("refusal", "the response is a refusal")
    echo = find_system_echo(text, echo_fragments)
    if echo:
        return Rejection("system_echo", f"repeats the system prompt: {echo!r}")
    turns = PARSERS[task](text)
    if isinstance(turns, Rejection):
        return turns
    if all(has_refusal(t.answer[:120].lower()) for t in turns):
        return Rejection("refusal", "every answer is a refusal")
    return turns


def present_categories(captions: tuple[str, ...], box_categories: set[str]) -> frozenset[str]:
    """COCO categories an image is known to show: its boxes plus those its captions name."""
    return frozenset(box_categories | categories_named(" ".join(captions).lower()))


def _named_affirmatively(text_lower: str, category: str) -> bool:
    """True unless every mention is negated ("no dogs", "without any people")."""
    pattern = r"\b(?:" + "|".join(re.escape(w) for w in words_for(category)) + r")\b"
    for m in re.finditer(pattern, text_lower):
        before = text_lower[max(0, m.start() - 30) : m.start()].split()[-2:]
        if not _NEGATIONS.intersection(before):
            return True
    return False


def word_count(text: str) -> int:
    """Words in `text` (whitespace-separated tokens)."""
    return len(text.split())


def answer_flags(task: str, turns: tuple[Turn, ...], present: frozenset[str]) -> list[str]:
    """Validation flags of a parsed response; `present` is what the image is known to show.

    - `unseen_category:<name>`: an answer names a COCO category absent from boxes and
      captions (a cheap hallucination signal; negated mentions such as "no dogs" are ignored);
    - `coordinates_in_answer`: normalized coordinates or the words "coordinates"/"bounding box";
    - `short_answer` / `long_answer`: an answer outside ANSWER_WORD_LIMITS[task] (words);
    - `refusal`: a refusal phrase inside an otherwise usable answer.
    """
    text = "\n".join(t.answer for t in turns).lower()
    flags = [
        f"unseen_category:{category}"
        for category in sorted(categories_named(text) - present)
        if _named_affirmatively(text, category)
    ]
    if has_coordinates(text):
        flags.append("coordinates_in_answer")
    counts = [word_count(t.answer) for t in turns]
    short, long = ANSWER_WORD_LIMITS[task]
    if min(counts) < short:
        flags.append("short_answer")
    if max(counts) > long:
        flags.append("long_answer")
    if has_refusal(text):
        flags.append("refusal")
    return flags
