"""`judge`: a text-only GPT judge scores reference and candidate answers; the relative score.

One request per question (`judge-{question_id}`, and `judge-{question_id}-swap` with the two
answers in the other order) goes out through the batch client. Each verdict is parsed into two
scores (`verdicts.py`); per category and overall, relative = 100 x mean(candidate) /
mean(reference) over the parsed verdicts. LLaVA's arithmetic (`compat="llava"`) counts an
unparsed verdict as (-1, -1) instead, so that its published numbers compare like for like.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jinja2
import pandas as pd

from instructgen.errors import InputError
from instructgen.eval.records import Answer, JudgeContext, Question, image_key, response_text
from instructgen.eval.verdicts import parse_verdict
from instructgen.files import iter_jsonl, write_json, write_jsonl
from instructgen.generate.prompts import DEFAULT_PROMPTS, render_template

JUDGE_PROMPTS = DEFAULT_PROMPTS / "judge"
CATEGORY_ORDER = ("conv", "detail", "complex")
COMPAT = ("llava",)
UNPARSED_IN_LLAVA = (-1.0, -1.0)


@dataclass(frozen=True, slots=True)
class JudgeSettings:
    """The judge model and how its verdicts are counted."""

    model: str
    temperature: float
    max_tokens: int
    swap: bool
    compat: str | None


@dataclass(frozen=True, slots=True)
class Pair:
    """One question with both answers and the image's context: what one verdict is about."""

    question: Question
    context: JudgeContext
    reference: str
    candidate: str


@dataclass(frozen=True, slots=True)
class Review:
    """One question's verdicts; scores are [reference, candidate] in either order shown."""

    question_id: int | str
    category: str
    scores: tuple[float, float] | None
    text: str | None
    swap_scores: tuple[float, float] | None = None
    swap_text: str | None = None
    error: str | None = None  # the judge request failed

    def pair(self, swap: bool) -> tuple[float, float] | None:
        """The question's scores: one order, or both orders averaged (None unless both parse)."""
        if not swap:
            return self.scores
        if self.scores is None or self.swap_scores is None:
            return None
        return tuple((a + b) / 2 for a, b in zip(self.scores, self.swap_scores, strict=True))

    def first_position_gain(self) -> float | None:
        """How much more the answer shown first scored than in second place (points, 1-10)."""
        if self.scores is None or self.swap_scores is None:
            return None
        (ref_first, cand_second), (ref_second, cand_first) = self.scores, self.swap_scores
        return ((ref_first - ref_second) + (cand_first - cand_second)) / 2


def match_pairs(
    questions: list[Question],
    contexts: dict[str, JudgeContext],
    reference: dict[int | str, Answer],
    candidate: dict[int | str, Answer],
    contexts_path: Path,
) -> tuple[list[Pair], list[int | str]]:
    """The questions with both answers, as pairs; and the ids of those missing an answer.

    A judged question whose image has no context is an InputError: the judge cannot be fair
    without it.
    """
    by_id = {image_key(name): c for name, c in contexts.items()}
    by_id.pop(None, None)  # names without an image number match by their full name only
    pairs, missing = [], []
    for q in questions:
        if q.question_id not in reference or q.question_id not in candidate:
            missing.append(q.question_id)
            continue
        if q.image is None:
            raise InputError(
                f"question {q.question_id!r} has no image: the judge scores answers about an "
                "image from its captions and boxes; leave text-only questions out of --questions"
            )
        context = contexts.get(q.image) or by_id.get(image_key(q.image))
        if context is None:
            raise InputError(
                f"{contexts_path}: no context for image {q.image} (question {q.question_id!r}); "
                "pass the captions and boxes file of this question set"
            )
        pairs.append(Pair(q, context, reference[q.question_id].text, candidate[q.question_id].text))
    return pairs, missing


def load_judge_prompt(prompts: Path = JUDGE_PROMPTS) -> tuple[str, jinja2.Template]:
    """The judge's system prompt and its review template (which includes ../context.j2)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(prompts), str(Path(prompts).parent)]),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # plain text for a language model
    )
    system = render_template(env.get_template("system.j2"), {})
    return system, env.get_template("review.j2")


def judge_messages(pair: Pair, system: str, review: jinja2.Template, swapped: bool) -> list[dict]:
    """System and user message; the reference is Assistant 1 unless `swapped`."""
    first, second = (
        (pair.candidate, pair.reference) if swapped else (pair.reference, pair.candidate)
    )
    variables = {
        "captions": list(pair.context.captions),
        "boxes": [{"category": c, "bbox": list(b)} for c, b in pair.context.boxes],
        "question": pair.question.text.strip(),
        "answer_1": first.strip(),
        "answer_2": second.strip(),
    }
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": render_template(review, variables)},
    ]


def custom_id(question_id: int | str, swapped: bool) -> str:
    return f"judge-{question_id}" + ("-swap" if swapped else "")


def judge_requests(pairs: list[Pair], settings: JudgeSettings, prompts: Path = JUDGE_PROMPTS):
    """Batch API input lines: one per pair, and one more per pair with the order swapped."""
    system, review = load_judge_prompt(prompts)
    for pair in pairs:
        for swapped in (False, True) if settings.swap else (False,):
            body = {
                "model": settings.model,
                "messages": judge_messages(pair, system, review, swapped),
                "temperature": settings.temperature,
                "max_tokens": settings.max_tokens,
            }
            yield {
                "custom_id": custom_id(pair.question.question_id, swapped),
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": body,
            }


def check_same_requests(lines: list[dict], previous: Path) -> None:
    """Refuse to judge into a folder whose journal holds verdicts on other requests: other
    answers, another judge model or settings. New questions (answers added since) are fine."""
    if not previous.is_file():
        return
    before = {line.get("custom_id"): line for _, line in iter_jsonl(previous)}
    changed = [line["custom_id"] for line in lines if before.get(line["custom_id"], line) != line]
    if changed:
        raise InputError(
            f"{previous.parent}: holds verdicts on other answers or judge settings "
            f"({len(changed)} request(s) differ, first {changed[0]}); judge into another -o, "
            f"or delete {previous.parent / 'journal.sqlite'} to judge again (billed again)"
        )


def read_verdicts(responses: Path) -> dict[str, tuple[str | None, str | None]]:
    """custom_id -> (verdict text, error) from a responses.jsonl (Batch API output format)."""
    return {line.get("custom_id"): response_text(line) for _, line in iter_jsonl(responses)}


def make_reviews(
    pairs: list[Pair], verdicts: dict[str, tuple[str | None, str | None]], swap: bool
) -> list[Review]:
    """Parse each pair's verdict(s); swapped scores are put back in [reference, candidate]."""
    reviews = []
    for pair in pairs:
        qid = pair.question.question_id
        text, error = verdicts.get(custom_id(qid, False), (None, "no response"))
        scores = parse_verdict(text) if text is not None else None
        swap_text = swap_scores = None
        if swap:
            swap_text, swap_error = verdicts.get(custom_id(qid, True), (None, "no response"))
            parsed = parse_verdict(swap_text) if swap_text is not None else None
            swap_scores = parsed[::-1] if parsed else None
            error = error or swap_error
        reviews.append(
            Review(qid, pair.question.category, scores, text, swap_scores, swap_text, error)
        )
    return reviews


def review_line(review: Review, swap: bool) -> dict:
    """One reviews.jsonl line; `tuple` and `category` are what LLaVA's summary script reads."""
    line = {
        "question_id": review.question_id,
        "category": review.category,
        "scores": list(review.pair(swap)) if review.pair(swap) else None,
    }
    line["text"] = review.text
    # LLaVA's review field, for its summary script: the pair, (-1, -1) where none parsed
    line["tuple"] = list(review.pair(swap) or UNPARSED_IN_LLAVA)
    if swap:
        line |= {
            "order_scores": list(review.scores) if review.scores else None,
            "swap_scores": list(review.swap_scores) if review.swap_scores else None,
            "swap_text": review.swap_text,
            "first_position_gain": review.first_position_gain(),
        }
    if review.error:
        line["error"] = review.error
    return line


def score_frame(reviews: list[Review], settings: JudgeSettings) -> pd.DataFrame:
    """One row per judged question: category, reference and candidate score, parsed or not.

    Unparsed rows have NaN scores, or (-1, -1) under compat llava, as LLaVA counts them.
    """
    rows = []
    for r in reviews:
        pair = r.pair(settings.swap)
        if pair is None and settings.compat == "llava":
            pair = UNPARSED_IN_LLAVA
        rows.append(
            {
                "category": r.category,
                "reference": pair[0] if pair else float("nan"),
                "candidate": pair[1] if pair else float("nan"),
                "parsed": r.pair(settings.swap) is not None,
                "failed": r.error is not None,
                "gain": r.first_position_gain() if settings.swap else None,
            }
        )
    columns = ["category", "reference", "candidate", "parsed", "failed", "gain"]
    return pd.DataFrame(rows, columns=columns).astype({"gain": float})


def _stats(frame: pd.DataFrame, swap: bool, compat: str | None = None) -> dict:
    ref, cand = frame["reference"].mean(), frame["candidate"].mean()
    if compat == "llava":  # LLaVA divides the means rounded to 3 decimals
        ref, cand = round(ref, 3), round(cand, 3)
    stats = {
        "relative": round(100 * cand / ref, 1) if ref and pd.notna(ref) else None,
        "reference_mean": round(float(ref), 3) if pd.notna(ref) else None,
        "candidate_mean": round(float(cand), 3) if pd.notna(cand) else None,
        "n": int(len(frame)),
        "unparsed": int((~frame["parsed"]).sum()),
        "failed": int(frame["failed"].sum()),
    }
    if swap:
        gain = frame["gain"].mean()
        stats["first_position_gain"] = round(float(gain), 3) if pd.notna(gain) else None
    return stats


def summarize(reviews: list[Review], settings: JudgeSettings, missing: list[int | str]) -> dict:
    """summary.json: overall and per-category relative scores, counts and the judge settings."""
    frame = score_frame(reviews, settings)
    summary = {"all": _stats(frame, settings.swap, settings.compat) | {"missing": len(missing)}}
    present = list(dict.fromkeys(frame["category"]))
    order = [c for c in CATEGORY_ORDER if c in present] + sorted(
        c for c in present if c not in CATEGORY_ORDER
    )
    for category, group in frame.groupby("category", sort=False):
        summary[category] = _stats(group, settings.swap, settings.compat)
    summary = {"all": summary["all"]} | {c: summary[c] for c in order}
    summary["judge"] = {
        "model": settings.model,
        "temperature": settings.temperature,
        "swap": settings.swap,
        "compat": settings.compat,
    }
    if missing:
        summary["missing_question_ids"] = missing
    return summary


def summary_frame(summary: dict) -> pd.DataFrame:
    """The printed table: one row per category, then all."""
    rows = {k: v for k, v in summary.items() if isinstance(v, dict) and "relative" in v}
    order = [k for k in rows if k != "all"] + ["all"]
    frame = pd.DataFrame.from_dict(rows, orient="index").loc[order]
    return frame.drop(columns=["missing"], errors="ignore")


def write_outputs(out: Path, reviews: list[Review], summary: dict, swap: bool) -> None:
    """reviews.jsonl and summary.json, each atomically."""
    write_jsonl(out / "reviews.jsonl", (review_line(r, swap) for r in reviews))
    write_json(out / "summary.json", summary, indent=2)
