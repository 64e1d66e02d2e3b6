"""Batched answers of a local checkpoint (extra [train]): left-padded prompts, one `generate`.

A checkpoint of `instructgen train` is prompted in the conversation template it was trained
with (its instructgen_train.json); any other `LlavaForConditionalGeneration` folder with its
own chat template in that (`chat`), else in the `v1` layout, unless a template is given.
Greedy unless a temperature is set.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from instructgen.errors import InputError
from instructgen.eval.answer import AnswerFile, AnswerStats, check_images
from instructgen.eval.records import Answer, Question, answer_id
from instructgen.files import read_json
from instructgen.train.data import (
    TEMPLATES,
    chat_prompt_pieces,
    load_pixels,
    require_chat_template,
    stop_token_ids,
    tokenize_pieces,
    wants_bos,
)
from instructgen.train.export import META_FILE, load_folder_processor, load_trained
from instructgen.train.model import tokens_per_image


@dataclass(frozen=True)
class Answerer:
    """A loaded model and how to prompt it."""

    model: object
    tokenizer: object
    processor: object
    template: str
    pad_to_square: bool
    system: str | None = None  # system message of the `chat` template
    typed: bool = False  # the chat template takes typed content parts (a model folder's)

    @property
    def stop_ids(self) -> list[int]:
        """Token ids that end an answer."""
        return stop_token_ids(self.tokenizer, self.template)


def load_answerer(
    directory: Path, dtype: torch.dtype, device: str, template: str | None = None
) -> Answerer:
    """Load a trained checkpoint or any LLaVA folder; anything else is an InputError."""
    from transformers import LlavaForConditionalGeneration

    directory = Path(directory)
    if template is not None and template not in TEMPLATES:
        raise InputError(f"unknown template {template!r}; choose one of {', '.join(TEMPLATES)}")
    if (directory / META_FILE).is_file():
        model, tokenizer, processor, meta = load_trained(directory, dtype)
        chosen, pad, system = template or meta.template, meta.pad_to_square, meta.system
    else:
        config = directory / "config.json"
        if not directory.exists():
            raise InputError(
                f"{directory}: no such checkpoint folder; for a model an endpoint serves, "
                "add --base-url URL (e.g. --base-url https://api.openai.com/v1 --model gpt-4o)"
            )
        if not config.is_file():
            raise InputError(
                f"{directory}: not a checkpoint (no {META_FILE} or config.json); pass the -o "
                "folder of `instructgen train` or a LlavaForConditionalGeneration folder"
            )
        kind = read_json(config).get("model_type")
        if kind != "llava":
            raise InputError(
                f"{config}: model_type {kind!r} is not a LLaVA model "
                "(LlavaForConditionalGeneration); answer needs an image-and-text model"
            )
        model = LlavaForConditionalGeneration.from_pretrained(directory, dtype=dtype)
        tokenizer, processor = load_folder_processor(directory)
        own = "chat" if getattr(tokenizer, "chat_template", None) else "v1"
        chosen, pad, system = template or own, False, None
    if chosen == "chat":
        require_chat_template(tokenizer, str(directory))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    typed = (directory / "config.json").is_file()
    return Answerer(model.to(device).eval(), tokenizer, processor, chosen, pad, system, typed)


def prompt_ids(answerer: Answerer, question: str, has_image: bool) -> list[int]:
    """Token ids of the prompt for one question, about one image or none, as in training."""
    config = answerer.model.config
    example = tokenize_pieces(
        chat_prompt_pieces(
            question,
            answerer.template,
            has_image,
            answerer.tokenizer,
            answerer.system,
            answerer.typed,
        ),
        answerer.tokenizer,
        config.image_token_index,
        tokens_per_image(config.vision_config),
        max_length=10**9,
        bos=wants_bos(answerer.template, answerer.tokenizer),
    )
    return example.input_ids


@torch.no_grad()
def generate_batch(
    answerer: Answerer,
    questions: list[Question],
    images: Path | None,
    max_new_tokens: int,
    temperature: float,
) -> list[tuple[str, int, bool]]:
    """Answers to `questions` in one left-padded batch: (text, new tokens, ended by eos)."""
    model, tokenizer = answerer.model, answerer.tokenizer
    prompts = [prompt_ids(answerer, q.text, q.image is not None) for q in questions]
    width = max(map(len, prompts))
    input_ids = torch.full((len(prompts), width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, ids in enumerate(prompts):  # left padding: every prompt ends at the last column
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        attention_mask[row, width - len(ids) :] = 1
    pictured = [Path(images) / q.image for q in questions if q.image is not None]
    # one row of pixels per image, in row order: the model fills the image tokens in that order
    images_in = {}  # no pixel_values key at all for text alone: generate() would encode None
    if pictured:
        pixels = load_pixels(pictured, answerer.processor, answerer.pad_to_square)
        images_in["pixel_values"] = pixels.to(model.device, model.dtype)
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {}
    stops = answerer.stop_ids
    out = model.generate(
        input_ids=input_ids.to(model.device),
        attention_mask=attention_mask.to(model.device),
        max_new_tokens=max_new_tokens,
        eos_token_id=stops,
        pad_token_id=tokenizer.pad_token_id,
        **images_in,
        **({"do_sample": False} | sampling),
    )
    results = []
    for row in out[:, width:].tolist():
        end = next((k for k, token in enumerate(row) if token in stops), None)
        ended = end is not None
        new = row[:end] if ended else row
        results.append((tokenizer.decode(new, skip_special_tokens=True).strip(), len(new), ended))
    return results


def answer_with_checkpoint(
    answerer: Answerer,
    answers: AnswerFile,
    images: Path | None,
    batch_size: int,
    max_new_tokens: int,
    temperature: float,
    on_batch: Callable[[int, int], None] | None = None,
) -> AnswerStats:
    """Answer the unanswered questions in batches of `batch_size`; each batch is kept on disk
    as soon as it is generated. `on_batch(answers, tokens)` reports progress."""
    model_id = answers.model_id
    todo = check_images(answers.todo(), images)
    started = time.monotonic()
    tokens = 0
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        results = generate_batch(answerer, batch, images, max_new_tokens, temperature)
        new = [
            Answer(
                q.question_id,
                q.text,
                text,
                answer_id(model_id, q.question_id, text),
                model_id,
                {
                    "backend": "checkpoint",
                    "template": answerer.template,
                    "temperature": temperature,
                    "max_new_tokens": max_new_tokens,
                    "completion_tokens": n,
                    "finish_reason": "stop" if ended else "length",
                },
            )
            for q, (text, n, ended) in zip(batch, results, strict=True)
        ]
        answers.add(new)
        batch_tokens = sum(n for _, n, _ in results)
        tokens += batch_tokens
        if on_batch:
            on_batch(len(batch), batch_tokens)
    seconds = time.monotonic() - started
    answers.finish()
    return AnswerStats(
        len(answers.questions), answers.answered_before, len(todo), 0, tokens, seconds
    )
