"""POPE (Li et al., 2023): yes/no questions about objects that are, or are not, in an image.

build: from COCO contexts, per sampled image 3 of its boxed categories (answer yes) and 3
objects it does not show (answer no), alternating, in three splits that differ only in how
the negatives are drawn:
- random: at random among the objects of the sampled images;
- popular: the objects boxed in the most images (of every context given);
- adversarial: the objects that share an image most often with the image's own objects.
A negative is never boxed in the image nor named by its captions (the CHAIR matcher).

score: LLaVA's yes/no rule on each answer, matched to its question by question_id; yes is the
positive class; a missing answer is listed and counted, never scored.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from instructgen.contracts import ImageContext
from instructgen.curate.chair import ground_truth
from instructgen.errors import InputError
from instructgen.files import iter_jsonl, write_jsonl

SPLITS = ("random", "popular", "adversarial")
PER_IMAGE = 3  # yes questions per image, and as many no questions
MIN_CATEGORIES = 3  # boxed categories an image needs to be sampled
# As published (percent), not measured here: LLaVA-1.5 paper, POPE F1 averaged over the splits.
PUBLISHED = {"LLaVA-1.5-7B F1 (published)": 85.9}
# objects that come in pairs read wrong after "a"
_PAIRS = {"skis": "a pair of skis", "scissors": "a pair of scissors"}


def split_file(split: str) -> str:
    """The file name of one split: pope_<split>.jsonl."""
    return f"pope_{split}.jsonl"


def with_article(category: str) -> str:
    """`an apple`, `a tv`, `a pair of skis`: the object as the question names it."""
    if category in _PAIRS:
        return _PAIRS[category]
    return ("an " if category[0] in "aeiou" else "a ") + category


def question_text(category: str) -> str:
    """The POPE question about one object."""
    return f"Is there {with_article(category)} in the image?"


@dataclass(frozen=True, slots=True)
class PopeImage:
    """What POPE needs of one image: its boxed categories and every object it shows."""

    image_id: int
    file_name: str
    boxed: frozenset[str]
    shown: frozenset[str]  # boxed plus named by a caption: never a negative


def read_pope_images(path: Path) -> list[PopeImage]:
    """Every context of a contexts.jsonl, reduced to its objects."""
    images = []
    for lineno, obj in iter_jsonl(path):
        ctx = ImageContext.from_json(obj, f"{path}:{lineno}")
        boxed = frozenset(b.category for b in ctx.boxes)
        images.append(
            PopeImage(ctx.image_id, ctx.file_name, boxed, ground_truth(ctx.captions, boxed))
        )
    return images


def _ranked(scores: Counter, exclude: frozenset[str], n: int) -> list[str]:
    """The n highest-scoring objects not in `exclude` (ties by name)."""
    ranked = sorted((c for c in scores if c not in exclude), key=lambda c: (-scores[c], c))
    return ranked[:n]


def build_pope(images: list[PopeImage], n_images: int, seed: int) -> dict[str, list[dict]]:
    """split -> question lines (question_id, image, text, category = split, label, object).

    Question ids run on across the splits (random, popular, adversarial), so the answers to
    all three can share one file. Deterministic for `seed`.
    """
    eligible = sorted(
        (im for im in images if len(im.boxed) >= MIN_CATEGORIES), key=lambda i: i.image_id
    )
    if len(eligible) < n_images:
        raise InputError(
            f"only {len(eligible)} images have at least {MIN_CATEGORIES} boxed categories; "
            f"ask for --images {len(eligible)} or fewer, or pass more contexts"
        )
    rng = random.Random(seed)
    sampled = rng.sample(eligible, n_images)
    # the same yes questions in every split: the splits differ only in their negatives
    positives = {im.image_id: rng.sample(sorted(im.boxed), PER_IMAGE) for im in sampled}
    frequency = Counter(c for im in images for c in im.boxed)  # images boxing each object
    cooccurrence: dict[str, Counter] = {}
    for im in images:
        for c in im.boxed:
            cooccurrence.setdefault(c, Counter()).update(im.boxed - {c})
    sampled_objects = sorted({c for im in sampled for c in im.boxed})
    all_objects = sorted(frequency)
    splits: dict[str, list[dict]] = {s: [] for s in SPLITS}
    next_id = 1
    for split in SPLITS:
        split_rng = random.Random(f"{seed}:{split}")
        for im in sampled:
            if split == "random":
                pool = [c for c in sampled_objects if c not in im.shown]
                if len(pool) < PER_IMAGE:  # few images sampled: widen to every object
                    pool = [c for c in all_objects if c not in im.shown]
                negatives = split_rng.sample(pool, min(PER_IMAGE, len(pool)))
            elif split == "popular":
                negatives = _ranked(frequency, im.shown, PER_IMAGE)
            else:
                together = Counter()
                for c in im.boxed:
                    together.update(cooccurrence.get(c, Counter()))
                negatives = _ranked(together, im.shown, PER_IMAGE)
                if len(negatives) < PER_IMAGE:  # too few co-occurring objects: the popular ones
                    negatives += _ranked(
                        frequency, im.shown | set(negatives), PER_IMAGE - len(negatives)
                    )
            if len(negatives) < PER_IMAGE:
                raise InputError(
                    f"image {im.image_id}: fewer than {PER_IMAGE} objects are absent from it "
                    "among the contexts' objects; pass more contexts"
                )
            for yes, no in zip(positives[im.image_id], negatives, strict=True):
                for category, label in ((yes, "yes"), (no, "no")):
                    splits[split].append(
                        {
                            "question_id": next_id,
                            "image": im.file_name,
                            "text": question_text(category),
                            "category": split,
                            "label": label,
                            "object": category,
                        }
                    )
                    next_id += 1
    return splits


def write_pope(contexts: Path, n_images: int, seed: int, out_dir: Path) -> dict[str, int]:
    """Write OUT/pope_random.jsonl, pope_popular.jsonl, pope_adversarial.jsonl; split -> lines."""
    splits = build_pope(read_pope_images(contexts), n_images, seed)
    return {s: write_jsonl(Path(out_dir) / split_file(s), lines) for s, lines in splits.items()}


# --- score ---


def says_no(text: str) -> bool:
    """LLaVA's rule: the words before the first period, commas dropped, split on spaces;
    "No", "no" or "not" among them means no."""
    words = text.split(".")[0].replace(",", "").split(" ")
    return "No" in words or "no" in words or "not" in words


@dataclass(frozen=True, slots=True)
class PopeQuestion:
    """One POPE question: its id, split and right answer (True = yes)."""

    question_id: int | str
    split: str
    label: bool


# The official POPE files name their split only in the file name: coco_pope_random.json.
_SPLIT_IN_NAME = re.compile(r"(?:^|_)pope_([a-z]+)\.jsonl?$")


def read_pope_questions(path: Path) -> list[PopeQuestion]:
    """POPE questions from one file or a folder of pope_<split>.jsonl (or the official
    coco_pope_<split>.json); split = the line's `category`, else the file name's split."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.glob("*pope_*.json*") if _SPLIT_IN_NAME.search(p.name))
        if not files:
            raise InputError(f"{path}: no pope_*.jsonl inside; run `instructgen pope build` first")
    else:
        files = [path]
    questions: list[PopeQuestion] = []
    seen: dict[int | str, str] = {}
    for file in files:
        named = _SPLIT_IN_NAME.search(file.name)
        for lineno, obj in iter_jsonl(file):
            where = f"{file}:{lineno}"
            qid, label = obj.get("question_id"), obj.get("label")
            split = obj.get("category") or (named.group(1) if named else None)
            if isinstance(qid, bool) or not isinstance(qid, int | str):
                raise InputError(f"{where}: missing question_id")
            if label not in ("yes", "no"):
                raise InputError(
                    f"{where}: question {qid!r}: label must be yes or no, not {label!r}"
                )
            if not isinstance(split, str) or not split:
                raise InputError(
                    f"{where}: question {qid!r} has no category, and the file name names no "
                    "split (pope_<split>.jsonl)"
                )
            if qid in seen:
                raise InputError(f"{where}: question_id {qid!r} already used ({seen[qid]})")
            seen[qid] = where
            questions.append(PopeQuestion(qid, split, label == "yes"))
    if not questions:
        raise InputError(f"{path}: no questions")
    return questions


METRICS = ("accuracy", "precision", "recall", "f1", "yes_ratio")


def _split_figures(tp: int, fp: int, tn: int, fn: int, missing: int) -> dict:
    n = tp + fp + tn + fn

    def ratio(a: int, b: int) -> float:
        return a / b if b else 0.0

    precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    figures = {
        "accuracy": ratio(tp + tn, n),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": ratio(tp + fp, n),
    }
    return {
        "n": n,
        # a split with no answer has no figures: null, never a 0 that reads as measured
        **{k: round(v, 4) if n else None for k, v in figures.items()},
        "missing": missing,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def score_pope(questions: list[PopeQuestion], answers: dict[int | str, str]) -> dict:
    """result.json: per split n, accuracy, precision, recall, f1, yes_ratio (fractions in
    [0, 1]; 0 where undefined, null for a split with no answer) and missing; their average
    over the answered splits (named in `average.splits`); the missing question ids; the
    published figures (percent, as published)."""
    counts: dict[str, Counter] = {}
    missing: list[int | str] = []
    for q in questions:
        c = counts.setdefault(q.split, Counter())
        if q.question_id not in answers:
            missing.append(q.question_id)
            c["missing"] += 1
            continue
        yes = not says_no(answers[q.question_id])
        c[("t" if yes == q.label else "f") + ("p" if yes else "n")] += 1
    order = [s for s in SPLITS if s in counts] + sorted(s for s in counts if s not in SPLITS)
    splits = {
        s: _split_figures(*(counts[s][k] for k in ("tp", "fp", "tn", "fn", "missing")))
        for s in order
    }
    answered = [s for s in order if splits[s]["n"]]
    average: dict = {
        k: round(sum(splits[s][k] for s in answered) / len(answered), 4) if answered else None
        for k in METRICS
    }
    average["splits"] = answered
    return {"splits": splits, "average": average, "missing": missing, "published": dict(PUBLISHED)}
