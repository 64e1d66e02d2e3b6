"""What training leaves on disk, and how stage 2 and `answer` / `chat` (eval/generate.py)
load it back.

Stage 1 writes `projector.safetensors` (the projector's weights only, as the paper's stage 1
does) and `instructgen_train.json` (what it was trained with). Stage 2 writes a standard
transformers model: `LlavaForConditionalGeneration` weights and a `LlavaProcessor` (image
processor, tokenizer, patch size, feature strategy, and a chat template that lays a
conversation out as training did), so that `AutoProcessor.from_pretrained` +
`apply_chat_template` + `generate` answer with no instructgen code, plus the same JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from instructgen.contracts import IMAGE_TOKEN
from instructgen.errors import InputError
from instructgen.files import atomic_writer, read_json, write_json
from instructgen.train.data import (
    V1_SYSTEM,
    stop_token_ids,
)
from instructgen.train.model import (
    Towers,
    build_model,
    load_image_processor,
    load_tokenizer,
)
from instructgen.train.towers import family_of

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
    system: str | None = None  # the system message of the `chat` template, if one was given
    vision_family: str = "clip"  # towers.py's family of the tower (loop.with_tower_family)


# Message contents given as typed parts ({"type": "image"} / {"type": "text", "text"}), as
# chat pipelines send them, become the text training saw: an image part is "<image>" and a
# newline. Prepended to every exported chat template; plain string contents pass unchanged.
_TYPED_TO_TEXT = (
    "{%- set flat = namespace(messages=[]) -%}"
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{%- set text = message['content'] -%}"
    "{%- else -%}{%- set parts = namespace(text='') -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}"
    "{%- set parts.text = parts.text ~ '" + IMAGE_TOKEN + "\\n' -%}"
    "{%- elif part['type'] == 'text' -%}{%- set parts.text = parts.text ~ part['text'] -%}"
    "{%- endif -%}{%- endfor -%}{%- set text = parts.text -%}{%- endif -%}"
    "{%- set flat.messages = flat.messages + [{'role': message['role'], 'content': text}] -%}"
    "{%- endfor -%}"
    "{%- set messages = flat.messages -%}"
)
# The `plain` and `v1` layouts of data.py as Jinja: plain is the image placeholders (and the
# caption); v1 the system line, then ` USER: <question> ASSISTANT:` and ` <answer></s>`.
_PLAIN = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{- '" + IMAGE_TOKEN + "' * (message['content'].split('" + IMAGE_TOKEN + "') | length - 1) -}}"
    "{%- elif message['role'] == 'assistant' -%}{{- message['content'] | trim -}}{{- '\\n' -}}"
    "{%- endif -%}{%- endfor -%}"
)
_V1 = (
    "{{- " + json.dumps(V1_SYSTEM) + " -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{- ' USER: ' ~ (message['content'] | trim) ~ ' ASSISTANT:' -}}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{- ' ' ~ (message['content'] | trim) ~ eos_token -}}"
    "{%- endif -%}{%- endfor -%}"
)


def _system_first(system: str) -> str:
    """Jinja that puts `system` in front of a conversation that has no system message of its
    own, as training (`--system`) did."""
    return (
        "{%- if not messages or messages[0]['role'] != 'system' -%}"
        "{%- set messages = [{'role': 'system', 'content': " + json.dumps(system) + "}]"
        " + messages -%}{%- endif -%}"
    )


def processor_chat_template(template: str, tokenizer, system: str | None = None) -> str:
    """The exported processor's chat template: the LLM tokenizer's own for `chat` (with the
    `--system` message of training inserted where a conversation has none), our Jinja of
    `plain` or `v1` otherwise; each takes typed or plain string contents."""
    if template == "chat":
        if not isinstance(tokenizer.chat_template, str):
            raise InputError(
                "the tokenizer holds several named chat templates; the export needs one"
            )
        return _TYPED_TO_TEXT + (_system_first(system) if system else "") + tokenizer.chat_template
    return _TYPED_TO_TEXT + (_PLAIN if template == "plain" else _V1)


# The image processor settings a LlavaImageProcessor takes over from the tower's own.
_IMAGE_SETTINGS = (
    "do_resize",
    "size",
    "resample",
    "crop_size",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
    "do_convert_rgb",
)


def exported_image_processor(image_processor, pad_to_square: bool):
    """The image processor of the export: the tower's own, or with `--pad-to-square`
    transformers' `LlavaImageProcessor` with its settings and `do_pad`, which pads to a square
    on the mean colour before resizing exactly as `data.load_pixels` does."""
    if not pad_to_square:
        return image_processor
    from transformers import LlavaImageProcessor

    settings = image_processor.to_dict()
    kept = {k: settings[k] for k in _IMAGE_SETTINGS if settings.get(k) is not None}
    crop = bool(settings.get("do_center_crop"))  # SigLIP resizes to a square, crops nothing
    return LlavaImageProcessor(**kept, do_center_crop=crop, do_pad=True)


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
    """Save a loadable transformers checkpoint into `directory`, file by file atomically: the
    model, a `LlavaProcessor` of `tokenizer` and `image_processor`, and the settings.

    `state_dict` is the gathered one under sharded training (DeepSpeed ZeRO-3); otherwise the
    model's own weights are saved.
    """
    from transformers import LlavaProcessor

    family = family_of(model.config.vision_config.model_type, meta.vision)
    processor = LlavaProcessor(
        image_processor=exported_image_processor(image_processor, meta.pad_to_square),
        tokenizer=tokenizer,
        patch_size=model.config.vision_config.patch_size,
        vision_feature_select_strategy=model.config.vision_feature_select_strategy,
        num_additional_image_tokens=family.extra_tokens,
        chat_template=processor_chat_template(meta.template, tokenizer, meta.system),
        image_token=IMAGE_TOKEN,
    )
    # generate() then stops at the end of a turn with no argument, as for a model of the Hub.
    model.generation_config.eos_token_id = stop_token_ids(tokenizer, meta.template)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=directory))
    try:
        model.save_pretrained(staging, state_dict=state_dict, safe_serialization=True)
        processor.save_pretrained(staging)
        write_json(staging / META_FILE, asdict(meta), indent=2)
        # config.json goes last, so a half-moved export is not mistaken for a complete one.
        names = sorted(p.name for p in staging.iterdir() if p.name != "config.json")
        for name in [*names, "config.json"]:
            os.replace(staging / name, directory / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_trained(directory: Path, dtype: torch.dtype = torch.float32):
    """Load a stage-2 export or a stage-1 projector folder: (model, tokenizer, processor, meta)."""
    from transformers import LlavaForConditionalGeneration

    directory = Path(directory)
    meta = read_trained_with(directory)
    if (directory / "config.json").is_file():
        model = LlavaForConditionalGeneration.from_pretrained(directory, dtype=dtype)
        tokenizer, processor = load_folder_processor(directory)
    else:
        tokenizer = load_tokenizer(meta.llm)
        processor = load_image_processor(meta.vision)
        towers = Towers(meta.vision, meta.llm, meta.projector, meta.feature_layer)
        model = build_model(towers, tokenizer, dtype)
        load_projector(model, directory)
    return model.eval(), tokenizer, processor, meta


def load_folder_processor(directory: Path):
    """(tokenizer, image processor) of a model folder: from its `LlavaProcessor`, or from the
    separate tokenizer and image processor files of folders saved without one."""
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

    processor = AutoProcessor.from_pretrained(directory)
    if hasattr(processor, "image_processor") and hasattr(processor, "tokenizer"):
        if getattr(processor, "chat_template", None):  # the model's own layout, multimodal
            processor.tokenizer.chat_template = processor.chat_template
        return processor.tokenizer, processor.image_processor
    return AutoTokenizer.from_pretrained(directory), AutoImageProcessor.from_pretrained(directory)
