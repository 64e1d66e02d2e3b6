"""What training leaves on disk, and how `chat` and stage 2 load it back.

Stage 1 writes `projector.safetensors` (the projector's weights only, as the paper's stage 1
does) and `instructgen_train.json` (what it was trained with). Stage 2 writes a complete
transformers checkpoint (`config.json`, `model.safetensors`, tokenizer, image processor) that
`LlavaForConditionalGeneration.from_pretrained` loads, plus the same JSON.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from instructgen.errors import InputError
from instructgen.files import atomic_writer, read_json, write_json
from instructgen.train.data import chat_prompt_pieces, load_pixels, tokenize_pieces
from instructgen.train.model import (
    Towers,
    build_model,
    load_image_processor,
    load_tokenizer,
    tokens_per_image,
)

PROJECTOR_FILE = "projector.safetensors"
META_FILE = "instructgen_train.json"


@dataclass(frozen=True)
class TrainedWith:
    """The settings a checkpoint was trained with; `chat` and stage 2 reuse them."""

    stage: int
    vision: str
    llm: str
    projector: str
    feature_layer: int
    template: str
    pad_to_square: bool


def read_trained_with(directory: Path) -> TrainedWith:
    """Read `instructgen_train.json` of a checkpoint directory."""
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise InputError(
            f"{directory}: not a checkpoint of `instructgen train` (no {META_FILE}); "
            "pass the -o folder of a finished stage"
        )
    raw = read_json(path)
    try:
        return TrainedWith(**raw)
    except TypeError as e:
        raise InputError(
            f"{path}: unexpected content ({e}); re-run the stage that wrote it"
        ) from None


def save_projector(model, directory: Path, meta: TrainedWith, state_dict=None) -> Path:
    """Write the projector weights (safetensors) and the settings, each file atomically.

    `state_dict` is the model's gathered one under sharded training (DeepSpeed ZeRO-3).
    """
    prefix = "model.multi_modal_projector."
    full = state_dict if state_dict is not None else model.state_dict()
    weights = {
        k.removeprefix(prefix): v.detach().cpu().contiguous()
        for k, v in full.items()
        if k.startswith(prefix)
    }
    path = Path(directory) / PROJECTOR_FILE
    with atomic_writer(path, "wb") as f:
        f.write(save(weights))
    write_json(Path(directory) / META_FILE, asdict(meta), indent=2)
    return path


def load_projector(model, directory: Path) -> None:
    """Load stage-1 projector weights into `model`; the shapes must match its towers."""
    path = Path(directory) / PROJECTOR_FILE
    if not path.is_file():
        raise InputError(f"{directory}: no {PROJECTOR_FILE}; pass the -o folder of stage 1")
    try:
        model.model.multi_modal_projector.load_state_dict(load_file(path))
    except RuntimeError as e:
        raise InputError(
            f"{path}: does not fit these towers ({str(e).splitlines()[0]}); "
            "use the --vision and --llm that stage 1 was trained with"
        ) from None


def export_model(
    model, tokenizer, image_processor, directory: Path, meta: TrainedWith, state_dict=None
):
    """Save a loadable transformers checkpoint into `directory`, file by file atomically.

    `state_dict` is the gathered one under sharded training (DeepSpeed ZeRO-3); otherwise the
    model's own weights are saved.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=directory))
    try:
        model.save_pretrained(staging, state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        image_processor.save_pretrained(staging)
        write_json(staging / META_FILE, asdict(meta), indent=2)
        # config.json goes last, so a half-moved export is not mistaken for a complete one.
        names = sorted(p.name for p in staging.iterdir() if p.name != "config.json")
        for name in [*names, "config.json"]:
            os.replace(staging / name, directory / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_trained(directory: Path, dtype: torch.dtype = torch.float32):
    """Load a stage-2 export or a stage-1 projector folder: (model, tokenizer, processor, meta)."""
    from transformers import AutoImageProcessor, AutoTokenizer, LlavaForConditionalGeneration

    directory = Path(directory)
    meta = read_trained_with(directory)
    if (directory / "config.json").is_file():
        model = LlavaForConditionalGeneration.from_pretrained(directory, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(directory)
        processor = AutoImageProcessor.from_pretrained(directory)
    else:
        tokenizer = load_tokenizer(meta.llm)
        processor = load_image_processor(meta.vision)
        towers = Towers(meta.vision, meta.llm, meta.projector, meta.feature_layer)
        model = build_model(towers, tokenizer, dtype)
        load_projector(model, directory)
    return model.eval(), tokenizer, processor, meta


@torch.no_grad()
def answer(
    model,
    tokenizer,
    processor,
    meta: TrainedWith,
    image: Path | None,
    question: str,
    max_new_tokens: int = 256,
) -> str:
    """Greedy answer of a trained model to `question` about `image` (prompted as in training)."""
    example = tokenize_pieces(
        chat_prompt_pieces(question, meta.template, has_image=image is not None),
        tokenizer,
        model.config.image_token_index,
        tokens_per_image(model.config.vision_config),
        max_length=10**9,
    )
    input_ids = torch.tensor([example.input_ids], device=model.device)
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    if image is not None:
        pixels = load_pixels([image], processor, meta.pad_to_square)
        inputs["pixel_values"] = pixels.to(model.device, model.dtype)
    out = model.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return tokenizer.decode(out[0, input_ids.shape[1] :], skip_special_tokens=True).strip()
