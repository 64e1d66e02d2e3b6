"""Training data: LLaVA-format records -> token ids, labels and pixel tensors.

A record is `{"id", "image", "conversations": [{"from": "human"|"gpt", "value"}, ...]}`; extra
keys (custom_id, task, flags) are ignored. Each `<image>` in the text becomes a block of
`tokens_per_image` copies of the image token id, which the model replaces by projected
patch features. Labels are -100 everywhere except the assistant's words (and its end token).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from instructgen.contracts import IMAGE_TOKEN
from instructgen.errors import InputError
from instructgen.files import read_json

IGNORE = -100  # label value the loss skips
TEMPLATES = ("plain", "v1")
# v1 follows the Vicuna v1 layout (`USER: ... ASSISTANT: ...</s>`); the system line is ours.
V1_SYSTEM = (
    "A conversation between a person and an AI assistant that can see images. "
    "The assistant answers the person's questions helpfully, in detail and politely."
)


@dataclass(frozen=True)
class Turn:
    """One message of a conversation: `human` or `gpt`."""

    role: str
    text: str


@dataclass(frozen=True)
class TrainRecord:
    """One training example: image file names (relative to the image folder) and turns."""

    id: str
    images: tuple[str, ...]
    turns: tuple[Turn, ...]


@dataclass(frozen=True)
class Piece:
    """A stretch of prompt text; `train` marks assistant text, `eos` appends the end token."""

    text: str
    train: bool
    eos: bool = False


@dataclass(frozen=True)
class Example:
    """A tokenized record: ids and labels of equal length, and how many images it keeps."""

    input_ids: list[int]
    labels: list[int]
    n_images: int


def parse_records(raw: object, source: Path) -> list[TrainRecord]:
    """Validate a LLaVA-format JSON list; errors name the file, record index and id."""
    if not isinstance(raw, list):
        raise InputError(f"{source}: expected a JSON list of records, got {type(raw).__name__}")
    return [_parse_record(item, source, i) for i, item in enumerate(raw)]


def _parse_record(item: object, source: Path, index: int) -> TrainRecord:
    where = f"{source}: record {index}"
    if not isinstance(item, dict):
        raise InputError(f"{where}: expected an object, got {type(item).__name__}")
    rid = str(item.get("id", index))
    where = f"{where} (id {rid})"
    image = item.get("image")
    images = (image,) if isinstance(image, str) else tuple(image or ())
    if not all(isinstance(name, str) and name for name in images):
        raise InputError(f'{where}: "image" must be a file name or a list of file names')
    convs = item.get("conversations")
    if not isinstance(convs, list) or not convs:
        raise InputError(f'{where}: "conversations" must be a non-empty list of turns')
    turns = []
    for k, turn in enumerate(convs):
        ok = isinstance(turn, dict) and isinstance(turn.get("value"), str)
        role = turn.get("from") if ok else None
        if role != ("human" if k % 2 == 0 else "gpt"):
            raise InputError(
                f'{where}: turn {k} must be {{"from": "{"human" if k % 2 == 0 else "gpt"}", '
                f'"value": "..."}} (turns alternate human, gpt, starting with human)'
            )
        turns.append(Turn(role, turn["value"]))
    if len(turns) % 2:
        raise InputError(f"{where}: the last turn is a human turn with no gpt answer; remove it")
    n_tokens = sum(t.text.count(IMAGE_TOKEN) for t in turns)
    if n_tokens > len(images):
        raise InputError(
            f"{where}: {n_tokens} {IMAGE_TOKEN} tokens but {len(images)} image(s); "
            f"give one image per {IMAGE_TOKEN} token"
        )
    if n_tokens == 0 and images:
        # A record with images but no placeholder gets them in front of its first question.
        placeholders = "\n".join([IMAGE_TOKEN] * len(images))
        turns[0] = Turn("human", f"{placeholders}\n{turns[0].text}")
    elif n_tokens < len(images):
        raise InputError(
            f"{where}: {len(images)} images but {n_tokens} {IMAGE_TOKEN} token(s); "
            f"put one {IMAGE_TOKEN} in the text per image"
        )
    return TrainRecord(rid, images, tuple(turns))


def read_records(path: Path, image_dir: Path) -> list[TrainRecord]:
    """Read pretrain.json / llava_instruct.json and check that every image file exists."""
    records = parse_records(read_json(path), Path(path))
    if not Path(image_dir).is_dir():
        raise InputError(f"{image_dir}: no such image folder (pass the folder with --images)")
    missing = [
        (r.id, name) for r in records for name in r.images if not (image_dir / name).is_file()
    ]
    if missing:
        rid, name = missing[0]
        raise InputError(
            f"{path}: {len(missing)} image(s) not found in {image_dir}, first {name} "
            f"(record id {rid}); fix --images or drop those records"
        )
    return records


def template_pieces(record: TrainRecord, template: str) -> list[Piece]:
    """Lay a record out as prompt pieces in the `plain` (stage 1) or `v1` (stage 2) format.

    plain: the image placeholders followed by the answer and a newline; the question is dropped,
    so stage 1 learns to caption. It takes exactly one human/gpt exchange.
    v1: `<system> USER: <question> ASSISTANT: <answer></s>` repeated for every exchange.
    """
    if template == "plain":
        if len(record.turns) != 2:
            raise InputError(
                f"record id {record.id}: template plain takes one human/gpt exchange, this "
                f"record has {len(record.turns) // 2}; use --template v1 (stage 2) for dialogues"
            )
        placeholders = "".join([IMAGE_TOKEN] * record.turns[0].text.count(IMAGE_TOKEN))
        return [Piece(placeholders, False), Piece(record.turns[1].text.strip() + "\n", True)]
    if template == "v1":
        pieces = [Piece(V1_SYSTEM, False)]
        for question, answer in zip(record.turns[::2], record.turns[1::2], strict=True):
            pieces.append(Piece(f" USER: {question.text.strip()} ASSISTANT:", False))
            pieces.append(Piece(" " + answer.text.strip(), True, eos=True))
        return pieces
    raise InputError(f"unknown template {template!r}; choose one of {', '.join(TEMPLATES)}")


def check_template(records: Sequence[TrainRecord], template: str, source: Path) -> None:
    """Lay out every record in `template` once, so that a data file meant for the other stage
    fails before the model is built, not later inside a data-loading worker."""
    for record in records:
        try:
            template_pieces(record, template)
        except InputError as e:
            raise InputError(f"{source}: {e}") from None


def chat_prompt_pieces(question: str, template: str, has_image: bool) -> list[Piece]:
    """The prompt a trained model continues: one question in the template it was trained on."""
    text = question if IMAGE_TOKEN in question or not has_image else f"{IMAGE_TOKEN}\n{question}"
    if template == "plain":
        return [Piece(IMAGE_TOKEN if has_image else "", False)]
    return [Piece(V1_SYSTEM, False), Piece(f" USER: {text.strip()} ASSISTANT:", False)]


def tokenize_pieces(
    pieces: Sequence[Piece],
    tokenizer,
    image_token_id: int,
    tokens_per_image: int,
    max_length: int,
) -> Example:
    """Token ids and labels for `pieces`, cut to `max_length` tokens without splitting an image.

    Each piece is tokenized on its own so that the label mask follows piece boundaries
    exactly. When the cut falls inside an image block, the sequence ends before that block and
    the image is dropped from the example.
    """
    [example] = tokenize_many([pieces], tokenizer, image_token_id, tokens_per_image, max_length)
    return example


def tokenize_many(
    examples: Sequence[Sequence[Piece]],
    tokenizer,
    image_token_id: int,
    tokens_per_image: int,
    max_length: int,
) -> list[Example]:
    """`tokenize_pieces` for many examples with one batched tokenizer call (fast on 600K)."""
    if max_length <= tokens_per_image:
        raise InputError(
            f"--max-length {max_length} cannot hold one image ({tokens_per_image} tokens); raise it"
        )
    chunks = [
        chunk
        for pieces in examples
        for piece in pieces
        for chunk in piece.text.split(IMAGE_TOKEN)
        if chunk
    ]
    encoded = iter(_encode(tokenizer, chunks))
    # Looked up once: each lookup goes through the tokenizer's vocabulary.
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    return [
        _assemble(pieces, encoded, bos, eos, image_token_id, tokens_per_image, max_length)
        for pieces in examples
    ]


def _encode(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, no special tokens; the Rust tokenizer directly when there is one
    (what `tokenizer(texts)` calls, without building a BatchEncoding)."""
    if not texts:
        return []
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]


def _assemble(pieces, encoded, bos, eos, image_token_id, tokens_per_image, max_length) -> Example:
    """One example from its pieces and an iterator over the token ids of its text chunks."""
    ids: list[int] = []
    labels: list[int] = []
    blocks: list[tuple[int, int]] = []  # [start, end) of each image block
    if bos is not None:
        ids.append(bos)
        labels.append(IGNORE)
    for piece in pieces:
        for k, chunk in enumerate(piece.text.split(IMAGE_TOKEN)):
            if k > 0:
                blocks.append((len(ids), len(ids) + tokens_per_image))
                ids.extend([image_token_id] * tokens_per_image)
                labels.extend([IGNORE] * tokens_per_image)
            if chunk:
                chunk_ids = next(encoded)
                ids.extend(chunk_ids)
                labels.extend(chunk_ids if piece.train else [IGNORE] * len(chunk_ids))
        if piece.eos:
            ids.append(eos)
            labels.append(eos if piece.train else IGNORE)
    cut = min(len(ids), max_length)
    for start, end in blocks:
        if start < cut < end:
            cut = start
    kept = sum(1 for _, end in blocks if end <= cut)
    return Example(ids[:cut], labels[:cut], kept)


def expand_to_square(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """Pad the shorter side symmetrically with `fill` (RGB, 0-255) so the image is square."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def load_pixels(paths: Sequence[Path], image_processor, pad_to_square: bool) -> torch.Tensor:
    """Open images and run the vision tower's preprocessing: a (n, 3, H, W) float tensor.

    Without padding the processor resizes the short side and centre-crops (CLIP's default);
    with padding the whole image is kept, on a background of the processor's mean colour.
    """
    if not paths:
        size = image_processor.crop_size
        return torch.zeros(0, 3, size["height"], size["width"])
    fill = tuple(int(round(255 * m)) for m in image_processor.image_mean)
    images = []
    for path in paths:
        try:
            image = Image.open(path).convert("RGB")
        except OSError as e:
            raise InputError(f"{path}: cannot read the image ({e}); replace or drop it") from None
        images.append(expand_to_square(image, fill) if pad_to_square else image)
    return image_processor(images=images, return_tensors="pt")["pixel_values"]


class LlavaDataset(torch.utils.data.Dataset):
    """Records tokenized lazily, one example per index, with their images preprocessed."""

    def __init__(
        self,
        records: Sequence[TrainRecord],
        image_dir: Path,
        tokenizer,
        image_processor,
        *,
        template: str,
        image_token_id: int,
        tokens_per_image: int,
        max_length: int,
        pad_to_square: bool,
    ):
        self.records = list(records)
        self.image_dir = Path(image_dir)
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.template = template
        self.image_token_id = image_token_id
        self.tokens_per_image = tokens_per_image
        self.max_length = max_length
        self.pad_to_square = pad_to_square

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        record = self.records[index]
        example = tokenize_pieces(
            template_pieces(record, self.template),
            self.tokenizer,
            self.image_token_id,
            self.tokens_per_image,
            self.max_length,
        )
        paths = [self.image_dir / name for name in record.images[: example.n_images]]
        return {
            "input_ids": torch.tensor(example.input_ids),
            "labels": torch.tensor(example.labels),
            "pixel_values": load_pixels(paths, self.image_processor, self.pad_to_square),
        }


def collate(batch: Sequence[dict[str, torch.Tensor]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch; pixel values of all its images are stacked in text order."""
    width = max(len(item["input_ids"]) for item in batch)
    input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, item in enumerate(batch):
        n = len(item["input_ids"])
        input_ids[row, :n] = item["input_ids"]
        labels[row, :n] = item["labels"]
        attention_mask[row, :n] = 1
    out = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
    pixels = torch.cat([item["pixel_values"] for item in batch])
    if len(pixels):
        out["pixel_values"] = pixels
    return out
