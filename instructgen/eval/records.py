"""The files of an evaluation, in the formats LLaVA publishes, so that theirs and ours mix.

- questions: `{question_id, image, text, category}` per line;
- answers: `{question_id, prompt, text, answer_id, model_id, metadata}` per line (LLaVA's
  reference answer files carry only `question_id, text, category`: they are read as well);
- contexts of the judge: LLaVA's `caps_boxes` lines (`image, captions, instances: [{category,
  bbox}]`), LLaVA-Bench (In-the-Wild)'s `context.jsonl` (`image, caption`: one caption, no
  boxes) or our contexts.jsonl (`file_name, captions, boxes`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from instructgen.curate.build import extract_text
from instructgen.errors import InputError
from instructgen.files import iter_jsonl

UNCATEGORIZED = "other"  # the category of a question whose line names none
# summary.json's own keys beside the categories': a category may not take one
RESERVED_CATEGORIES = ("all", "judge", "missing_question_ids")


@dataclass(frozen=True, slots=True)
class Question:
    """One evaluation question, about one image (a file name relative to the image folder) or,
    with `image` None, about text alone (ScienceQA's questions without a picture)."""

    question_id: int | str
    image: str | None
    text: str
    category: str


@dataclass(frozen=True, slots=True)
class Answer:
    """One answer line. `metadata` holds how it was made (backend, tokens, finish reason)."""

    question_id: int | str
    prompt: str
    text: str
    answer_id: str
    model_id: str
    metadata: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "question_id": self.question_id,
            "prompt": self.prompt,
            "text": self.text,
            "answer_id": self.answer_id,
            "model_id": self.model_id,
            "metadata": self.metadata,
        }


@dataclass(frozen=True, slots=True)
class JudgeContext:
    """What the text-only judge is told about an image: captions and normalized boxes."""

    image: str
    captions: tuple[str, ...]
    boxes: tuple[tuple[str, tuple[float, ...]], ...]  # (category, [x1, y1, x2, y2])


def answer_id(model_id: str, question_id: int | str, text: str) -> str:
    """A stable id of one answer: 22 hex digits of a hash of model, question and text."""
    return hashlib.sha256(f"{model_id}\n{question_id}\n{text}".encode()).hexdigest()[:22]


def _question_id(obj: dict, where: str) -> int | str:
    qid = obj.get("question_id")
    if isinstance(qid, bool) or not isinstance(qid, int | str) or qid == "":
        raise InputError(f"{where}: missing question_id (an integer or a string)")
    return qid


def read_questions(path: Path) -> list[Question]:
    """Read a questions file; a line without id or text, an image that is not a file name, a
    repeated id, or a category named like a key of summary.json, is an error. A line without
    `image` is a text-only question; one without `category` is in category `other`."""
    questions: list[Question] = []
    seen: dict[int | str, int] = {}
    for lineno, obj in iter_jsonl(path):
        where = f"{path}:{lineno}"
        qid = _question_id(obj, where)
        if qid in seen:
            raise InputError(f"{where}: question_id {qid!r} already used on line {seen[qid]}")
        seen[qid] = lineno
        image, text = obj.get("image"), obj.get("text")
        if image is not None and (not isinstance(image, str) or not image):
            raise InputError(f"{where}: question {qid!r}: image must be a file name or absent")
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"{where}: question {qid!r} has no text")
        category = str(obj.get("category") or UNCATEGORIZED)
        if category in RESERVED_CATEGORIES:
            raise InputError(
                f"{where}: question {qid!r}: category {category!r} is a key of the judge's "
                f"summary.json ({', '.join(RESERVED_CATEGORIES)}); rename the category"
            )
        questions.append(Question(qid, image, text, category))
    if not questions:
        raise InputError(f"{path}: no questions")
    return questions


def read_answers(path: Path) -> dict[int | str, Answer]:
    """Read an answers file (ours or LLaVA's) into question_id -> Answer."""
    answers: dict[int | str, Answer] = {}
    for lineno, obj in iter_jsonl(path):
        where = f"{path}:{lineno}"
        qid = _question_id(obj, where)
        if qid in answers:
            raise InputError(f"{where}: a second answer to question {qid!r}; keep one")
        text = obj.get("text")
        if not isinstance(text, str):
            raise InputError(f"{where}: the answer to question {qid!r} has no text")
        model_id = str(obj.get("model_id") or "")
        answers[qid] = Answer(
            question_id=qid,
            prompt=str(obj.get("prompt") or ""),
            text=text,
            answer_id=str(obj.get("answer_id") or answer_id(model_id, qid, text)),
            model_id=model_id,
            metadata=obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {},
        )
    return answers


def response_text(line: dict) -> tuple[str | None, str | None]:
    """(the assistant's text, None) of one Batch API output line, or (None, why there is none):
    a failed request (its error or HTTP status) or a refusal. A reply cut at max_tokens keeps
    its text."""
    got = extract_text(line)
    if got.rejection is None or got.rejection.reason not in ("failed_request", "refusal"):
        return got.text, None
    if got.rejection.reason == "refusal":
        return None, f"{got.rejection.detail}: {got.text}"
    return None, got.rejection.detail


def check_known(answers: Iterable[int | str], questions: list[Question], path: Path) -> None:
    """Refuse answers to questions that the questions file does not have."""
    known = {q.question_id for q in questions}
    unknown = [qid for qid in answers if qid not in known]
    if unknown:
        shown = ", ".join(map(repr, unknown[:5]))
        raise InputError(
            f"{path}: {len(unknown)} answer(s) to unknown question ids ({shown}); "
            "is it the answer file of another question set?"
        )


def read_contexts(path: Path) -> dict[str, JudgeContext]:
    """Image file name -> context, from a caps_boxes file or a contexts.jsonl."""
    contexts: dict[str, JudgeContext] = {}
    for lineno, obj in iter_jsonl(path):
        where = f"{path}:{lineno}"
        image = obj.get("image") or obj.get("file_name")
        boxes = obj.get("instances") if "instances" in obj else obj.get("boxes", [])
        captions = obj.get("captions")
        if captions is None and isinstance(obj.get("caption"), str):
            captions = [obj["caption"]]  # LLaVA-Bench (In-the-Wild): one detailed caption
        try:
            context = JudgeContext(
                image=str(image),
                captions=tuple(str(c) for c in captions),
                boxes=tuple(
                    (str(b["category"]), tuple(float(v) for v in b["bbox"])) for b in boxes or ()
                ),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(
                f"{where}: not an image context (need image or file_name, captions (or one "
                "caption), and "
                f"instances or boxes with category and bbox; {type(e).__name__}: {e})"
            ) from None
        if not image:
            raise InputError(f"{where}: a context without image or file_name")
        contexts[context.image] = context
    return contexts


def image_key(name: str) -> int | None:
    """The COCO image id in a file name (`COCO_val2014_000000441147.jpg` -> 441147)."""
    digits = re.findall(r"\d+", Path(name).stem)
    return int(digits[-1]) if digits else None
