"""Where the vision tower is chosen: its family, read from the tower's `config.json` `model_type`.

A family says which transformers classes load the tower and how LLaVA reads its features:
CLIP puts a CLS token before the patch tokens, which `default` drops; SigLIP has no CLS token,
so every output token is a patch token (`full`). Either way an image gives (side / patch)^2
tokens. SigLIP 2 checkpoints of fixed resolution are `model_type` `siglip` and load as SigLIP;
the NaFlex ones (`siglip2`) take patch masks and shapes that LLaVA's model never passes.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    PretrainedConfig,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from instructgen.errors import InputError


@dataclass(frozen=True)
class TowerFamily:
    """One kind of vision tower: how to load it and how LLaVA selects its features."""

    name: str
    model_types: tuple[str, ...]  # config.json model_type: the vision model, the dual encoder
    config_class: type
    model_class: type
    feature_strategy: str  # LLaVA's vision_feature_select_strategy
    extra_tokens: int  # tokens before the patch tokens (CLS): the processor's count of them


FAMILIES = (
    TowerFamily(
        name="clip",
        model_types=("clip_vision_model", "clip"),
        config_class=CLIPVisionConfig,
        model_class=CLIPVisionModel,
        feature_strategy="default",
        extra_tokens=1,
    ),
    TowerFamily(
        name="siglip",
        model_types=("siglip_vision_model", "siglip"),
        config_class=SiglipVisionConfig,
        model_class=SiglipVisionModel,
        feature_strategy="full",
        extra_tokens=0,
    ),
)
_WHY_NOT = {
    "siglip2": "SigLIP 2 NaFlex towers need patch masks that LlavaForConditionalGeneration "
    "does not pass; use a fixed-resolution SigLIP 2 checkpoint (model_type siglip)",
}


def family_of(model_type: str | None, where: str) -> TowerFamily:
    """The family whose `model_types` holds `model_type`; anything else is a one-line error."""
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    supported = ", ".join(t for family in FAMILIES for t in family.model_types)
    why = f" ({_WHY_NOT[model_type]})" if model_type in _WHY_NOT else ""
    raise InputError(
        f"{where}: vision tower model_type {model_type!r} is not supported{why}; "
        f"supported: {supported}"
    )


def tower_family(vision: str) -> TowerFamily:
    """The family of the tower at `vision` (a local folder or a hub name in the cache)."""
    raw = load_or_explain(PretrainedConfig.get_config_dict, vision, "vision config")[0]
    return family_of(raw.get("model_type"), vision)


def load_vision_config(vision: str):
    """The vision tower's config (the vision part of a dual-encoder config), no weights read."""
    family = tower_family(vision)
    return load_or_explain(family.config_class.from_pretrained, vision, "vision config")


def load_vision_tower(vision: str, **kwargs):
    """The pretrained vision tower in its family's class (`dtype=` and the like pass through)."""
    family = tower_family(vision)
    return load_or_explain(family.model_class.from_pretrained, vision, "vision tower", **kwargs)


def load_or_explain(loader, name: str, what: str, **kwargs):
    """`loader(name)`, with a failure to find or read it turned into one line."""
    try:
        return loader(name, **kwargs)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(
            f"cannot load the {what} from {name!r}: {first} "
            "(give a local directory made by save_pretrained, or a hub name already in the cache)"
        ) from None
