"""The model: vision tower + projector + causal LLM, as `LlavaForConditionalGeneration`.

The tower's family (CLIP, SigLIP) is chosen in `towers.py`.

Building on the transformers class means a trained model saves and loads with
`from_pretrained` anywhere in that ecosystem. The paper's `linear` projector is stored in the
class's two-layer projector as `linear_1`, an identity activation and an identity `linear_2`
that is never trained, so it computes exactly one linear map and still loads as a stock model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForCausalLM,
    AutoTokenizer,
    LlavaConfig,
    LlavaForConditionalGeneration,
)
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

from instructgen.contracts import IMAGE_TOKEN
from instructgen.errors import InputError
from instructgen.train.towers import (
    family_of,
    load_or_explain,
    load_vision_config,
    load_vision_tower,
)

PROJECTORS = ("linear", "mlp2x_gelu")
_ACTIVATION = {"linear": "linear", "mlp2x_gelu": "gelu"}
# The LLM's attention and MLP projections (Llama, Mistral, Qwen names) that LoRA wraps.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Towers:
    """What the model is assembled from: hub names or local directories, and the wiring."""

    vision: str
    llm: str
    projector: str = "linear"
    feature_layer: int = -2  # hidden layer of the vision tower whose patch tokens are used


def load_tokenizer(llm: str):
    """The LLM's tokenizer with `<image>` added as a special token and a pad token set."""
    tokenizer = load_or_explain(AutoTokenizer.from_pretrained, llm, "tokenizer")
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tokenizer.pad_token is None:
        # Padding is masked out of attention and loss, so any existing token will do.
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer


def load_image_processor(vision: str):
    """The vision tower's own preprocessing (resize, crop, normalise)."""
    return load_or_explain(AutoImageProcessor.from_pretrained, vision, "image processor")


def build_model(towers: Towers, tokenizer, dtype: torch.dtype = torch.float32):
    """Assemble a `LlavaForConditionalGeneration` from pretrained towers and a fresh projector."""
    _check_projector(towers.projector)
    vision = load_vision_tower(towers.vision, dtype=dtype)
    causal = load_or_explain(AutoModelForCausalLM.from_pretrained, towers.llm, "LLM", dtype=dtype)
    if len(tokenizer) > causal.get_input_embeddings().num_embeddings:
        causal.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    config = llava_config(towers, vision.config, causal.config, tokenizer)
    with torch.device("meta"):  # the towers are loaded already; don't allocate them twice
        model = LlavaForConditionalGeneration(config)
    model.model.vision_tower = vision
    model.model.language_model = causal.base_model
    model.lm_head = causal.get_output_embeddings()
    model.model.multi_modal_projector = LlavaMultiModalProjector(config).to(dtype)
    init_projector(model, towers.projector)
    return model


def build_empty_model(towers: Towers, tokenizer):
    """The same model built from the towers' configs alone, on the meta device.

    No weight is read or allocated: the parameters have shapes and no storage, so a 7B model
    costs nothing. Its parameter names, shapes and counts equal those of `build_model`.
    """
    _check_projector(towers.projector)
    vision_config = load_vision_config(towers.vision)
    text_config = load_or_explain(AutoConfig.from_pretrained, towers.llm, "LLM config")
    # build_model grows the embeddings to the tokenizer (the added <image> token); so do we.
    text_config.vocab_size = max(text_config.vocab_size, len(tokenizer))
    config = llava_config(towers, vision_config, text_config, tokenizer)
    with torch.device("meta"):
        return LlavaForConditionalGeneration(config)


def llava_config(towers: Towers, vision_config, text_config, tokenizer) -> LlavaConfig:
    """The wiring of the two towers: image token, feature layer and strategy, projector."""
    family = family_of(vision_config.model_type, towers.vision)
    return LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=tokens_per_image(vision_config),
        projector_hidden_act=_ACTIVATION[towers.projector],
        vision_feature_layer=towers.feature_layer,
        vision_feature_select_strategy=family.feature_strategy,
        tie_word_embeddings=text_config.tie_word_embeddings,
    )


def _check_projector(projector: str) -> None:
    if projector not in PROJECTORS:
        raise InputError(f"unknown projector {projector!r}; choose {', '.join(PROJECTORS)}")


def init_projector(model, projector: str) -> None:
    """Fresh projector weights; for `linear`, `linear_2` becomes a fixed identity map."""
    proj = model.model.multi_modal_projector
    for layer in (proj.linear_1, proj.linear_2):
        torch.nn.init.normal_(layer.weight, std=layer.in_features**-0.5)
        torch.nn.init.zeros_(layer.bias)
    if projector == "linear":
        with torch.no_grad():
            proj.linear_2.weight.copy_(torch.eye(proj.linear_2.out_features))


def projector_kind(model) -> str:
    """`linear` or `mlp2x_gelu`, read back from a model's config."""
    return "linear" if model.config.projector_hidden_act == "linear" else "mlp2x_gelu"


def tokens_per_image(vision_config) -> int:
    """Patch tokens one image contributes: (image_size / patch_size) squared, for CLIP (its CLS
    token dropped) and SigLIP (no CLS token) alike."""
    return (vision_config.image_size // vision_config.patch_size) ** 2


def set_trainable(model, *, train_llm: bool) -> list[str]:
    """Freeze everything but the projector (and the LLM when `train_llm`); return trained names.

    The vision tower is always frozen; so is an identity `linear_2` of a `linear` projector.
    """
    model.requires_grad_(False)
    model.model.multi_modal_projector.requires_grad_(True)
    if projector_kind(model) == "linear":
        model.model.multi_modal_projector.linear_2.requires_grad_(False)
    if train_llm:
        model.model.language_model.requires_grad_(True)
        model.lm_head.requires_grad_(True)
    return [name for name, p in model.named_parameters() if p.requires_grad]


def add_lora(model, rank: int) -> None:
    """Wrap the LLM's attention and MLP projections in LoRA adapters (alpha = 2 x rank).

    The base LLM weights stay frozen; export merges the adapters back into them.
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=rank, lora_alpha=2 * rank, lora_dropout=0.05, target_modules=list(LORA_TARGETS)
    )
    model.model.language_model = get_peft_model(model.model.language_model, config)


def lora_params(model, rank: int) -> int:
    """Parameters `add_lora(model, rank)` adds: rank x (in + out) per wrapped projection."""
    return sum(
        rank * (module.in_features + module.out_features)
        for name, module in model.model.language_model.named_modules()
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in LORA_TARGETS
    )


def merge_lora(model) -> None:
    """Fold LoRA adapters into the LLM weights so the model saves as a plain checkpoint."""
    from peft import PeftModel

    if isinstance(model.model.language_model, PeftModel):
        model.model.language_model = model.model.language_model.merge_and_unload()
