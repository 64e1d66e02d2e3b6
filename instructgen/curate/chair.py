"""CHAIR (Rohrbach et al., 2018): how often generated text names COCO objects the image lacks.

- ground truth of an image: its box categories plus the categories its human captions name;
- mentions: one left-to-right matcher over the 80 categories, their synonyms and plurals
  (`category_words.py` plus the CHAIR-only words below); at each word the longest name wins,
  so "hot dog" is a hot dog and never a dog, "teddy bear" never a bear, "baby elephant" an
  elephant and not a person;
- CHAIR_i = hallucinated mentions / mentions (pooled, every mention counted);
  CHAIR_s = records with a hallucinated mention / records;
  recall = true objects mentioned / true objects (pooled over records).

With `skip_negated`, a mention under a negation is not counted: a negation cue ("no", "not",
"without", "nor", "never", "neither", "none", a word ending in "n't") among the
NEGATION_WINDOW words before it, in the same clause (a clause ends at . ! ? ; : , or at
"but", "although", "though", "while", "whereas", "however").
"""

from __future__ import annotations

import json
import re
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, NamedTuple

from instructgen.contracts import TASKS, split_custom_id
from instructgen.curate.category_words import WORD_TO_CATEGORY
from instructgen.errors import InputError
from instructgen.files import iter_jsonl, read_json
from instructgen.generate.exclude import coco_id, image_key

# Words the published CHAIR lists know and `category_words` leaves out (which serves a
# flag, not a metric), with their plurals written out.
_CHAIR_WORDS: dict[str, str] = {  # category -> its extra words, space-separated
    "person": "chef chefs worker workers policeman policemen cop cops officer officers bride "
    "brides groom grooms mother mothers father fathers pitcher pitchers batter batters catcher "
    "catchers umpire umpires skater skaters biker bikers bicyclist bicyclists driver drivers "
    "student students soldier soldiers tourist tourists spectator spectators athlete athletes",
    "car": "van vans minivan minivans jeep jeeps",
    "bird": "eagle eagles owl owls swan swans hawk hawks crow crows penguin penguins flamingo "
    "flamingos",
    "dog": "pup pups",
    "horse": "foal foals stallion stallions mare mares",
    "sheep": "ram rams ewe ewes",
    "cow": "ox oxen",
    "couch": "loveseat loveseats",
    "cell phone": "iphone iphones",
}
# two-word names the same way, comma-separated
_CHAIR_PHRASES: dict[str, str] = {
    "truck": "fire truck, fire trucks",
    "traffic light": "stop light, stop lights",
}
# Names that contain a category word but name no object of it: matched (so the word inside
# is consumed) and not counted. "bus stop" shows no bus; "toilet paper" no toilet.
_NOT_OBJECTS = (
    "bus stop, bus stops, bus station, bus stations, train station, train stations, "
    "train track, train tracks, toilet paper"
)
# "baby elephant", "young horses", "adult giraffe": the animal, not a person
_ANIMALS = ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe")
_AGE_WORDS = ("baby", "young", "adult")


def _vocabulary() -> dict[tuple[str, ...], str | None]:
    """Name (as a tuple of words) -> category, or None for a name that is not an object."""
    names: dict[str, str | None] = dict(WORD_TO_CATEGORY)
    for category, words in _CHAIR_WORDS.items():
        names.update(dict.fromkeys(words.split(), category))
    for category, phrases in _CHAIR_PHRASES.items():
        names.update(dict.fromkeys(phrases.split(", "), category))
    names.update(dict.fromkeys(_NOT_OBJECTS.split(", ")))
    for word, category in list(names.items()):
        if category in _ANIMALS and " " not in word:
            names.update({f"{age} {word}": category for age in _AGE_WORDS})
    return {tuple(name.split()): category for name, category in names.items()}


VOCABULARY = _vocabulary()
_CATEGORY_OF = {" ".join(name): category for name, category in VOCABULARY.items()}
_UNKNOWN = object()  # a `_CATEGORY_OF.get` default that no category is
NEGATION_WINDOW = 5  # words before a mention in which a negation cue applies to it
_NEGATIONS = frozenset({"no", "not", "without", "nor", "never", "neither", "none"})
_CLAUSE_WORDS = frozenset({"but", "although", "though", "while", "whereas", "however"})


class Mention(NamedTuple):
    """One object name in a text: the words as written (lower case), the category, the
    character span [start, end) in the text, and whether a negation governs it.

    A NamedTuple, not a frozen dataclass: millions are made per build, at a third the cost.
    """

    word: str
    category: str
    start: int
    end: int
    negated: bool


# ASCII letters lowered one for one, and everything but apostrophes and clause marks turned
# into spaces: the same length as the text, so a match's span is its span in the text; a
# two-word name never reaches across a clause mark ("it was hot. Dog owners ...").
# str.translate for the ASCII characters (fast), a regex for the rare others.
_LETTERS = str.maketrans(
    {chr(c): chr(c + 32) for c in range(ord("A"), ord("Z") + 1)}
    | {chr(c): " " for c in range(128) if not chr(c).isalpha() and chr(c) not in "'.!?;:,"}
)
_NON_ASCII = re.compile(r"[^\x00-\x7f’]")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _trie_pattern(names: Iterable[str]) -> str:
    """One regex alternation of `names` as a character trie: each prefix is tried once, and the
    greedy optional tails make the longest name win. A space between words matches any run."""
    trie: dict = {}
    for name in names:
        node = trie
        for ch in name:
            node = node.setdefault(ch, {})
        node[""] = {}

    def pattern(node: dict) -> str:
        branches = [
            (" +" if ch == " " else re.escape(ch)) + pattern(child)
            for ch, child in sorted(node.items())
            if ch
        ]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return pattern(trie)


_NAME = re.compile(r"\b" + _trie_pattern(" ".join(n) for n in VOCABULARY) + r"\b")
_WORD = re.compile(r"([a-z]+)(?:['’]([a-z]+))?")
_CLAUSE_END = re.compile(r"[.!?;:,]")
_LOOK_BACK = 200  # characters before a mention searched for its negation window
_CUE = re.compile(r"\b" + _trie_pattern(_NEGATIONS) + r"\b|n['’]t\b")


def _negated(text: str, start: int) -> bool:
    """A negation cue among the NEGATION_WINDOW words before `start`, in the same clause."""
    before = _CLAUSE_END.split(text[max(0, start - _LOOK_BACK) : start].translate(_ASCII_LOWER))[-1]
    words = _WORD.findall(before)
    for i in range(len(words) - 1, -1, -1):
        if words[i][0] in _CLAUSE_WORDS:
            words = words[i + 1 :]
            break
    return any(
        word in _NEGATIONS or (suffix == "t" and word.endswith("n"))
        for word, suffix in words[-NEGATION_WINDOW:]
    )


def find_mentions(text: str) -> list[Mention]:
    """Every COCO object named in `text`, left to right, the longest name winning at each word."""
    letters = text.translate(_LETTERS)
    if not letters.isascii():
        letters = _NON_ASCII.sub(" ", letters)
    cues: list[int] | None = None  # where negation cues stand, found at the first mention
    mentions = []
    for m in _NAME.finditer(letters):
        name = m.group()
        category = _CATEGORY_OF.get(name, _UNKNOWN)
        if category is _UNKNOWN:  # words apart by more than one space
            name = " ".join(name.split())
            category = _CATEGORY_OF[name]
        if category is None:
            continue
        start = m.start()
        if cues is None:  # the regex only where a cue may be: every cue contains one of these
            maybe = (
                "no" in letters
                or "n't" in letters
                or "without" in letters
                or "never" in letters
                or "neither" in letters
                or "n’t" in letters
            )
            cues = [c.start() for c in _CUE.finditer(letters)] if maybe else []
        negated = False
        if cues:  # only a mention shortly after a cue needs its window read
            k = bisect_left(cues, start)
            negated = k > 0 and start - cues[k - 1] <= _LOOK_BACK and _negated(text, start)
        mentions.append(Mention(name, category, start, m.end(), negated))
    return mentions


def _names_in(text: str) -> list[tuple[str, str]]:
    """(word, category) of every mention in `text`, as find_mentions has them, without spans
    or negation (cheaper: no match objects)."""
    letters = text.translate(_LETTERS)
    if not letters.isascii():
        letters = _NON_ASCII.sub(" ", letters)
    found = []
    for name in _NAME.findall(letters):
        category = _CATEGORY_OF.get(name, _UNKNOWN)
        if category is _UNKNOWN:  # words apart by more than one space
            name = " ".join(name.split())
            category = _CATEGORY_OF[name]
        if category is not None:
            found.append((name, category))
    return found


def ground_truth(captions: Iterable[str], box_categories: Iterable[str]) -> frozenset[str]:
    """The COCO categories an image shows: its boxes plus every object its captions name."""
    named = {category for _, category in _names_in(".\n".join(captions))}
    return frozenset(named | set(box_categories))


@dataclass(frozen=True, slots=True)
class ChairRecord:
    """CHAIR of one record: its counted mentions as (word, category), those absent from the
    image, where those are ((turn, start, end): the index of the turn in `conversations`, or
    0 for an answer, and a character span), and how many true objects it names."""

    id: str
    image: str
    task: str
    custom_id: str | None
    mentioned: tuple[tuple[str, str], ...]
    hallucinated: tuple[tuple[str, str], ...]
    spans: tuple[tuple[int, int, int], ...]
    negated: tuple[tuple[str, str], ...]
    true_objects: int
    true_objects_mentioned: int

    def to_json(self) -> dict:
        obj = {
            "id": self.id,
            "image": self.image,
            "task": self.task,
            "hallucinated": [list(p) for p in self.hallucinated],
            "mentioned": [list(p) for p in self.mentioned],
            "spans": [list(s) for s in self.spans],
        }
        if self.custom_id is not None:
            obj["custom_id"] = self.custom_id
        if self.negated:
            obj["negated"] = [list(p) for p in self.negated]
        return obj


def score_record(
    id: str,
    image: str,
    task: str,
    texts: Iterable[tuple[int, str]],
    truth: frozenset[str],
    skip_negated: bool = False,
    custom_id: str | None = None,
) -> ChairRecord:
    """CHAIR of the texts (turn index, text) of one record against its image's `truth`."""
    mentioned, hallucinated, spans, negated = [], [], [], []
    for turn, text in texts:
        if not skip_negated:  # the common case, quicker: names first, spans only if needed
            found = _names_in(text)
            mentioned += found
            if all(category in truth for _, category in found):
                continue
            mentioned[len(mentioned) - len(found) :] = []
        for m in find_mentions(text):
            if skip_negated and m.negated:
                negated.append((m.word, m.category))
                continue
            mentioned.append((m.word, m.category))
            if m.category not in truth:
                hallucinated.append((m.word, m.category))
                spans.append((turn, m.start, m.end))
    named = {category for _, category in mentioned}
    return ChairRecord(
        id,
        image,
        task,
        custom_id,
        tuple(mentioned),
        tuple(hallucinated),
        tuple(spans),
        tuple(negated),
        len(truth),
        len(truth & named),
    )


@dataclass
class ChairTally:
    """Running CHAIR counts of a group of records."""

    records: int = 0
    records_hallucinating: int = 0
    mentions: int = 0
    hallucinated: int = 0
    true_objects: int = 0
    true_objects_mentioned: int = 0

    def add(self, record: ChairRecord) -> None:
        self.records += 1
        self.records_hallucinating += bool(record.hallucinated)
        self.mentions += len(record.mentioned)
        self.hallucinated += len(record.hallucinated)
        self.true_objects += record.true_objects
        self.true_objects_mentioned += record.true_objects_mentioned

    def figures(self) -> dict:
        """chair_i, chair_s and recall as fractions in [0, 1] (None over nothing), and counts."""

        def ratio(a: int, b: int) -> float | None:
            return round(a / b, 4) if b else None

        return {
            "chair_i": ratio(self.hallucinated, self.mentions),
            "chair_s": ratio(self.records_hallucinating, self.records),
            "recall": ratio(self.true_objects_mentioned, self.true_objects),
            "mentions": self.mentions,
            "hallucinated": self.hallucinated,
            "records": self.records,
            "records_with_hallucination": self.records_hallucinating,
            "true_objects": self.true_objects,
            "true_objects_mentioned": self.true_objects_mentioned,
        }


def chair_table(figures: dict[str, dict], title: str = "CHAIR"):
    """A rich table, one row per group of `figures` (ChairTally.figures()): CHAIR_i, CHAIR_s
    and recall in percent, and the counts."""
    from rich.table import Table

    table = Table(
        title=title,
        title_justify="left",
        caption="CHAIR_i, CHAIR_s and recall in %",
        caption_justify="left",
        show_edge=False,
    )
    # at 80 columns the headers and figures stay whole; a long group name folds instead
    table.add_column("group", overflow="fold")
    for col in ("CHAIR_i", "CHAIR_s", "recall", "mentions", "hallucinated", "records"):
        table.add_column(col, justify="right", no_wrap=True, min_width=len(col))

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}"

    for group, f in figures.items():
        table.add_row(
            group,
            pct(f["chair_i"]),
            pct(f["chair_s"]),
            pct(f["recall"]),
            str(f["mentions"]),
            str(f["hallucinated"]),
            str(f["records"]),
        )
    return table


@dataclass
class ChairReport:
    """CHAIR of a data set: overall, per task (or group), per record, and what was skipped."""

    skip_negated: bool = False
    overall: ChairTally = field(default_factory=ChairTally)
    by_task: dict[str, ChairTally] = field(default_factory=dict)
    # each record's chair.json object, serialized at once: a build holds 158K of them
    records: list[str] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> record ids

    def add(self, record: ChairRecord) -> None:
        self.overall.add(record)
        self.by_task.setdefault(record.task, ChairTally()).add(record)
        self.records.append(json.dumps(record.to_json(), ensure_ascii=False))

    def skip(self, reason: str, record_id: str) -> None:
        self.skipped.setdefault(reason, []).append(record_id)

    def figures(self) -> dict:
        """`overall` and `by_task` (tasks in pipeline order, then other groups by name)."""
        ordered = [t for t in TASKS if t in self.by_task] + sorted(
            t for t in self.by_task if t not in TASKS
        )
        return {
            "overall": self.overall.figures(),
            "by_task": {t: self.by_task[t].figures() for t in ordered},
        }

    def write(self, out: IO[str], source: str = "") -> None:
        """chair.json into `out`: overall, by_task, records; then the options and the skipped
        records. One line per record."""
        head = json.dumps(self.figures(), ensure_ascii=False)
        out.write(head[:-1] + ',\n"records": [')
        for n, record in enumerate(self.records):
            out.write(",\n" if n else "\n")
            out.write(record)
        tail = {
            "skip_negated": self.skip_negated,
            "source": source,
            "skipped": {
                reason: {"count": len(ids), "ids": ids} for reason, ids in self.skipped.items()
            },
        }
        out.write("\n],\n" + json.dumps(tail, ensure_ascii=False)[1:] + "\n")


@dataclass(frozen=True, slots=True)
class Truths:
    """Ground truth of every image of a contexts.jsonl, by file name and by image id."""

    by_file_name: dict[str, frozenset[str]]
    by_image_id: dict[int, frozenset[str]]

    def of(self, image: str | None, image_id: int | None = None) -> frozenset[str] | None:
        """The truth of an image named by file name (any COCO spelling) or id; None if unknown."""
        if image and image in self.by_file_name:
            return self.by_file_name[image]
        if image_id is None and image:
            image_id = _coco_id(image)
        return self.by_image_id.get(image_id) if image_id is not None else None


def _coco_id(name: str) -> int | None:
    """The COCO image id of a COCO file name (`COCO_val2014_000000441147.jpg` -> 441147);
    None for any other name (`GCC_train_000000123.jpg` is no COCO image)."""
    return coco_id(image_key(name))


def read_truths(path: Path) -> Truths:
    """Ground truth per image from our contexts.jsonl (`image_id, file_name, captions, boxes`)
    or LLaVA's caps_boxes lines (`image, captions, instances`)."""
    by_file_name: dict[str, frozenset[str]] = {}
    by_image_id: dict[int, frozenset[str]] = {}
    for lineno, obj in iter_jsonl(path):
        try:
            file_name = str(obj.get("file_name") or obj["image"])
            image_id = int(obj["image_id"]) if "image_id" in obj else _coco_id(file_name)
            boxes = obj.get("boxes") if "boxes" in obj else obj.get("instances")
            truth = ground_truth(
                (str(c) for c in obj["captions"]), (str(b["category"]) for b in boxes or ())
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(
                f"{path}:{lineno}: not an image context: need file_name (or image), captions "
                f"and boxes (or instances) ({type(e).__name__}: {e})"
            ) from None
        by_file_name[file_name] = truth
        if image_id is not None:
            by_image_id[image_id] = truth
    return Truths(by_file_name, by_image_id)


def _task_of(record: dict, fallback: str) -> tuple[str, str | None]:
    """(task, custom_id): the task from the custom_id, else the record's `task`, else
    `fallback`."""
    cid = record.get("custom_id")
    cid = cid if isinstance(cid, str) else None
    parsed = split_custom_id(cid) if cid else None
    if parsed:
        return parsed[1], cid
    task = record.get("task")
    return (task if isinstance(task, str) and task else fallback), cid


def score_llava_records(
    report: ChairReport, records: object, truths: Truths, where: str, task: str = "all"
) -> None:
    """Add the records of one LLaVA JSON list to `report`: their assistant turns are scored.

    A record's task comes from its custom_id (coco-<image>-<task>) or its `task` field,
    else it is `task`.
    A record whose image has no context is skipped and counted (reason `no_context`).
    """
    if not isinstance(records, list):
        raise InputError(f"{where}: not a LLaVA JSON list of records")
    for n, record in enumerate(records):
        if not isinstance(record, dict) or not isinstance(record.get("conversations"), list):
            raise InputError(f"{where}: record {n} has no conversations list")
        record_id = str(record.get("id", n))
        image = record.get("image")
        image = image if isinstance(image, str) else None
        record_task, cid = _task_of(record, task)
        truth = truths.of(image, split_custom_id(cid)[0] if cid and split_custom_id(cid) else None)
        if truth is None:
            report.skip("no_context", cid or record_id)
            continue
        texts = [
            (t, turn["value"])
            for t, turn in enumerate(record["conversations"])
            if isinstance(turn, dict)
            and turn.get("from") in ("gpt", "assistant")
            and isinstance(turn.get("value"), str)
        ]
        report.add(
            score_record(
                record_id, image or "", record_task, texts, truth, report.skip_negated, cid
            )
        )


def chair_of_llava(path: Path, truths: Truths, skip_negated: bool = False) -> ChairReport:
    """CHAIR of a build folder (its per-task files, one group per task) or of a LLaVA JSON
    (one group, `all`, unless its records carry our custom_ids or a `task`)."""
    path = Path(path)
    report = ChairReport(skip_negated)
    if path.is_dir():
        files = [(path / f"{t}.json", t) for t in TASKS if (path / f"{t}.json").is_file()]
        if not files:
            raise InputError(
                f"{path}: no per-task file ({', '.join(f'{t}.json' for t in TASKS)}); "
                "pass a build output folder or a LLaVA JSON file"
            )
    else:
        files = [(path, "all")]
    for file, task in files:
        score_llava_records(report, read_json(file), truths, str(file), task)
    return report


def score_answers(
    report: ChairReport,
    answers: Iterable[tuple[int | str, str]],
    questions: dict[int | str, tuple[str | None, str]],
    truths: Truths,
) -> None:
    """Add a model's answers (question_id, text) to `report`, each against the image of its
    question; `questions` maps question_id -> (image file name, category = the group).

    An answer to no known question is skipped (`no_question`), one whose image has no
    context too (`no_context`); both are counted.
    """
    for qid, text in answers:
        if qid not in questions:
            report.skip("no_question", str(qid))
            continue
        image, category = questions[qid]
        truth = truths.of(image)
        if truth is None:
            report.skip("no_context", str(qid))
            continue
        report.add(
            score_record(str(qid), image or "", category, [(0, text)], truth, report.skip_negated)
        )
