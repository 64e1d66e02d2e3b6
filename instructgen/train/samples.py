"""What is trained, shown before a GPU is rented: `train --dry-run --show-sample K`.

The first K records go through the same template and tokenizer as training; the token ids are
decoded back to text in runs of trained and untrained tokens, with each image's block of image
tokens shown as one `<image>`. This is the check that the loss mask is where it should be.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from instructgen.contracts import IMAGE_TOKEN
from instructgen.files import read_json, write_jsonl
from instructgen.train.data import (
    IGNORE,
    Example,
    parse_records,
    template_pieces,
    tokenize_pieces,
    wants_bos,
)
from instructgen.train.loop import TrainConfig, check_data
from instructgen.train.model import tokens_per_image
from instructgen.train.plan import planned_towers
from instructgen.train.towers import load_vision_config

SAMPLES_FILE = "samples.jsonl"


@dataclass(frozen=True)
class Segment:
    """A run of decoded text whose tokens are all trained, or all not."""

    text: str
    trained: bool


@dataclass(frozen=True)
class Sample:
    """One record as the model sees it: its segments, in order."""

    id: str
    segments: tuple[Segment, ...]


def trained_samples(cfg: TrainConfig, count: int) -> list[Sample]:
    """The first `count` records of `cfg.data` laid out and tokenized as `train` would."""
    meta = planned_towers(cfg)
    records = parse_records(read_json(cfg.data), Path(cfg.data))[:count]
    tokenizer = check_data(records, meta, cfg.data)
    per_image = tokens_per_image(load_vision_config(meta.vision))
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    samples = []
    for record in records:
        example = tokenize_pieces(
            template_pieces(record, meta.template, tokenizer, meta.system),
            tokenizer,
            image_id,
            per_image,
            cfg.max_length,
            bos=wants_bos(meta.template, tokenizer),
        )
        samples.append(Sample(record.id, segments(example, tokenizer, image_id, per_image)))
    return samples


def segments(example: Example, tokenizer, image_id: int, per_image: int) -> tuple[Segment, ...]:
    """The example decoded in runs of equal trained-ness; an image block decodes as one
    `<image>`. The texts, concatenated, are the whole decoded sequence."""
    ids: list[int] = []
    trained: list[bool] = []
    position = 0
    while position < len(example.input_ids):
        token = example.input_ids[position]
        ids.append(token)
        trained.append(example.labels[position] != IGNORE)
        position += per_image if token == image_id else 1

    def decode(chunk: list[int]) -> str:
        return tokenizer.decode(chunk, skip_special_tokens=False)

    runs: list[Segment] = []
    start, before = 0, ""
    for end in range(1, len(ids) + 1):
        if end < len(ids) and trained[end] == trained[start]:
            continue
        upto = decode(ids[:end])
        # Decoding a prefix gives a prefix of the whole text for every tokenizer we know; the
        # run decoded alone is the fallback where a character spans the boundary.
        text = upto[len(before) :] if upto.startswith(before) else decode(ids[start:end])
        runs.append(Segment(text, trained[start]))
        start, before = end, upto
    return tuple(runs)


def write_samples(samples: list[Sample], output: Path) -> Path:
    """`OUT/samples.jsonl`: one `{"id", "segments": [{"text", "trained"}]}` line per record."""
    path = Path(output) / SAMPLES_FILE
    Path(output).mkdir(parents=True, exist_ok=True)
    write_jsonl(path, ({"id": s.id, "segments": [asdict(g) for g in s.segments]} for s in samples))
    return path
