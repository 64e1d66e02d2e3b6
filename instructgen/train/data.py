"""Training data: LLaVA-format records -> token ids, labels and pixel tensors.

A record is `{"id", "image", "conversations": [{"from": "human"|"gpt", "value"}, ...]}`; extra
keys (custom_id, task, flags) are ignored. Each `<image>` in the text becomes a block of
`tokens_per_image` copies of the image token id, which the model replaces by projected
patch features. Labels are -100 everywhere except the assistant's words (and its end token).

Templates: `plain` (stage 1: the image, then the caption), `v1` (the paper's Vicuna layout) and
`chat` (the LLM tokenizer's own chat template: ChatML for Qwen2, Llama 3's headers, ...).
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
TEMPLATES = ("plain", "v1", "chat")
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


def template_pieces(
    record: TrainRecord, template: str, tokenizer=None, system: str | None = None
) -> list[Piece]:
    """Lay a record out as prompt pieces in the `plain`, `v1` or `chat` format.

    plain: the image placeholders followed by the answer and a newline; the question is dropped,
    so stage 1 learns to caption. It takes exactly one human/gpt exchange.
    v1: `<system> USER: <question> ASSISTANT: <answer></s>` repeated for every exchange.
    chat: `tokenizer`'s chat template (see `chat_pieces`), with `system` as the system message.
    """
    if template == "chat":
        return chat_pieces(record, tokenizer, system)
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


def chat_pieces(record: TrainRecord, tokenizer, system: str | None) -> list[Piece]:
    """A record in the tokenizer's chat template; trained: each answer and the end-of-turn
    token after it (`<|im_end|>` in ChatML), so that the model learns to stop.

    The template is rendered for the conversation up to each question (with the assistant's
    generation prompt) and up to each answer; what an answer adds is its text, the end token
    and what follows (a newline). This works for any template in which earlier turns render
    the same whatever comes after them, as chat templates do.
    """
    messages = [{"role": "system", "content": system}] if system else []

    def render(add_generation_prompt: bool) -> str:
        try:
            return render_chat(tokenizer, messages, add_generation_prompt)
        except InputError as e:
            raise InputError(f"record id {record.id}: {e}") from None

    pieces: list[Piece] = []
    rendered = ""
    for question, answer in zip(record.turns[::2], record.turns[1::2], strict=True):
        messages.append({"role": "user", "content": question.text})
        prompt = render(add_generation_prompt=True)
        messages.append({"role": "assistant", "content": answer.text})
        whole = render(add_generation_prompt=False)
        if not prompt.startswith(rendered) or not whole.startswith(prompt):
            raise InputError(
                f"record id {record.id}: the chat template renders earlier turns differently "
                "once later ones follow, so the answers cannot be located; use --template v1"
            )
        pieces.append(Piece(prompt[len(rendered) :], False))
        reply, text = whole[len(prompt) :], answer.text.strip()
        start = reply.find(text)
        if start < 0:
            raise InputError(
                f"record id {record.id}: the chat template does not render the answer as "
                "written (it rewrites assistant text); use --template v1"
            )
        end = start + len(text)
        stop = _end_of_turn(reply[end:], tokenizer)
        if reply[:start]:
            pieces.append(Piece(reply[:start], False))
        if stop is None:  # no end-of-turn token in the template: the tokenizer's eos ends it
            pieces.append(Piece(reply[start:end], True, eos=True))
            pieces.append(Piece(reply[end:], False))
        else:
            pieces.append(Piece(reply[start : end + stop], True))
            pieces.append(Piece(reply[end + stop :], False))
        rendered = whole
    return [piece for piece in pieces if piece.text or piece.eos]


def _end_of_turn(after: str, tokenizer) -> int | None:
    """Length of the text after an answer up to and including the special token that ends
    the turn (`<|im_end|>`, `<|eot_id|>`, `</s>`), when only blanks come before it."""
    stripped = after.lstrip()
    for token in sorted(special_tokens(tokenizer), key=len, reverse=True):
        if token and token != IMAGE_TOKEN and stripped.startswith(token):
            return len(after) - len(stripped) + len(token)
    return None


def special_tokens(tokenizer) -> set[str]:
    """The tokenizer's special tokens: its named ones (bos, eos, ...) and every added token
    marked special, which transformers 5 leaves out of `all_special_tokens` (Llama 3's
    `<|eot_id|>` when eos is `<|end_of_text|>`, Phi-3's `<|end|>`)."""
    added = getattr(tokenizer, "added_tokens_decoder", {}).values()
    return set(tokenizer.all_special_tokens) | {t.content for t in added if t.special}


def render_chat(
    tokenizer, messages: list[dict], add_generation_prompt: bool, typed: bool = False
) -> str:
    """The tokenizer's chat template applied to `messages` (string contents with `<image>`
    where the image goes), as text; `typed` passes contents as parts (`{"type": "image"}`,
    `{"type": "text", "text"}`), as multimodal templates (an exported model's) expect them."""
    from jinja2 import TemplateError

    if typed:
        messages = [{**m, "content": content_parts(m["content"])} for m in messages]
    try:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    except TemplateError as e:  # the template's own refusal, e.g. "no system role"
        raise InputError(
            f"the chat template refuses this conversation: {e}; drop --system if the "
            "template has no system role, or use --template v1"
        ) from None


def content_parts(text: str) -> list[dict]:
    """A message text as typed parts: each `<image>` an image part, the text around it text
    parts (the newline that follows an `<image>` belongs to the image)."""
    first, *rest = text.split(IMAGE_TOKEN)
    parts = [{"type": "text", "text": first}] if first else []
    for chunk in rest:
        parts.append({"type": "image"})
        chunk = chunk.removeprefix("\n")
        if chunk:
            parts.append({"type": "text", "text": chunk})
    return parts


def stop_token_ids(tokenizer, template: str) -> list[int]:
    """Token ids that end an answer: eos, and under `chat` the template's end-of-turn token
    (`<|im_end|>`, `<|eot_id|>`) when it is another one."""
    stops = [tokenizer.eos_token_id]
    if template == "chat":
        turn = [{"role": "user", "content": "question"}, {"role": "assistant", "content": "answer"}]
        rendered = render_chat(tokenizer, turn, add_generation_prompt=False)
        after = rendered[rendered.rfind("answer") + len("answer") :]
        length = _end_of_turn(after, tokenizer)
        if length is not None:
            stops.append(tokenizer.convert_tokens_to_ids(after[:length].strip()))
    return list(dict.fromkeys(t for t in stops if t is not None))


def require_chat_template(tokenizer, llm: str) -> None:
    """`--template chat` needs a tokenizer that has a chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise InputError(
            f"{llm}: the tokenizer has no chat template, so --template chat has nothing to "
            "follow; use --template v1, or an instruct LLM whose tokenizer has one"
        )


def check_template(
    records: Sequence[TrainRecord],
    template: str,
    source: Path,
    tokenizer=None,
    system: str | None = None,
) -> None:
    """Lay out every record in `template` once, so that a data file meant for the other stage
    fails before the model is built, not later inside a data-loading worker."""
    for record in records:
        try:
            template_pieces(record, template, tokenizer, system)
        except InputError as e:
            raise InputError(f"{source}: {e}") from None


def chat_prompt_pieces(
    question: str,
    template: str,
    has_image: bool,
    tokenizer=None,
    system: str | None = None,
    typed: bool = False,
) -> list[Piece]:
    """The prompt a trained model continues: one question in the template it was trained on
    (`chat`: the tokenizer's template with its generation prompt; `typed` as in `render_chat`)."""
    text = question if IMAGE_TOKEN in question or not has_image else f"{IMAGE_TOKEN}\n{question}"
    if template == "plain":
        return [Piece(IMAGE_TOKEN if has_image else "", False)]
    if template == "chat":
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": text.strip()})
        return [Piece(render_chat(tokenizer, messages, True, typed), False)]
    return [Piece(V1_SYSTEM, False), Piece(f" USER: {text.strip()} ASSISTANT:", False)]


def tokenize_pieces(
    pieces: Sequence[Piece],
    tokenizer,
    image_token_id: int,
    tokens_per_image: int,
    max_length: int,
    bos: bool = True,
) -> Example:
    """Token ids and labels for `pieces`, cut to `max_length` tokens without splitting an image.

    Each piece is tokenized on its own so that the label mask follows piece boundaries
    exactly. When the cut falls inside an image block, the sequence ends before that block and
    the image is dropped from the example. `bos`: start with the tokenizer's bos token, unless
    the text already does (a chat template that writes it); `wants_bos` says when.
    """
    [example] = tokenize_many(
        [pieces], tokenizer, image_token_id, tokens_per_image, max_length, bos
    )
    return example


def wants_bos(template: str, tokenizer) -> bool:
    """Whether a sequence starts with bos: always under `plain` and `v1` (the paper's layout);
    under `chat` when the tokenizer adds one by default (`add_bos_token`, its post-processor),
    as HF's processor does to the rendered prompt; `tokenize_many` adds none where the
    template writes bos itself (Llama 3), so there is one either way."""
    if template != "chat":
        return True
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a")["input_ids"][:1] == [bos]


def tokenize_many(
    examples: Sequence[Sequence[Piece]],
    tokenizer,
    image_token_id: int,
    tokens_per_image: int,
    max_length: int,
    bos: bool = True,
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
    bos_id, bos_text = (tokenizer.bos_token_id, tokenizer.bos_token) if bos else (None, None)
    eos = tokenizer.eos_token_id
    return [
        _assemble(
            pieces,
            encoded,
            None if _writes(pieces, bos_text) else bos_id,
            eos,
            image_token_id,
            tokens_per_image,
            max_length,
        )
        for pieces in examples
    ]


def _writes(pieces: Sequence[Piece], token: str | None) -> bool:
    """Whether the text of `pieces` starts with `token` (a template that writes bos)."""
    return bool(token) and bool(pieces) and pieces[0].text.startswith(token)


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


def pixel_size(image_processor) -> tuple[int, int]:
    """(height, width) in pixels of the processor's output: its crop (CLIP) or its resize
    (SigLIP resizes to a fixed square and crops nothing)."""
    size = image_processor.crop_size if getattr(image_processor, "do_center_crop", False) else None
    size = size or image_processor.size
    return size["height"], size["width"]


def load_pixels(paths: Sequence[Path], image_processor, pad_to_square: bool) -> torch.Tensor:
    """Open images and run the vision tower's preprocessing: a (n, 3, H, W) float tensor.

    Without padding the processor resizes the short side and centre-crops (CLIP's default);
    with padding the whole image is kept, on a background of the processor's mean colour.
    """
    if not paths:
        height, width = pixel_size(image_processor)
        return torch.zeros(0, 3, height, width)
    fill = tuple(int(255 * m) for m in image_processor.image_mean)  # as LLaVA pads
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
        system: str | None = None,
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
        self.system = system

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        record = self.records[index]
        example = tokenize_pieces(
            template_pieces(record, self.template, self.tokenizer, self.system),
            self.tokenizer,
            self.image_token_id,
            self.tokens_per_image,
            self.max_length,
            bos=wants_bos(self.template, self.tokenizer),
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
