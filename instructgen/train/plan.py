"""The plan of a run before any GPU is rented: parameters, memory per GPU, steps and hours.

`train --dry-run` builds the model from the towers' configs on the meta device (no weight is
read or allocated) and reads the data only to count records and measure token lengths. The
memory estimate is a formula, written out in the README and in `memory_per_gpu`; the trainer
benchmark checks it against a measured peak on a GPU.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from instructgen.errors import InputError
from instructgen.files import read_json, write_json
from instructgen.train.batches import grouped_batches_per_epoch
from instructgen.train.data import (
    parse_records,
    template_pieces,
    tokenize_many,
    wants_bos,
)
from instructgen.train.export import TrainedWith
from instructgen.train.loop import (
    RECIPES,
    TrainConfig,
    accumulation,
    check_data,
    group_by_length,
    optimizer_steps,
    trained_with,
    with_tower_family,
)
from instructgen.train.model import (
    Towers,
    build_empty_model,
    lora_params,
    set_trainable,
    tokens_per_image,
)

GIB = 2**30
PLAN_FILE = "plan.json"
ZERO_STAGES = (0, 2, 3)
FIT_SHARE = 0.9  # the rest of a GPU is left to the CUDA context, fragmentation, comm buffers
PLAN_LORA_RANK = 64  # the LoRA rank a stage-2 plan offers when the run itself is not LoRA
_TOKENIZE_CHUNK = 4096  # records per batched tokenizer call: bounded memory on 600K records


@dataclass(frozen=True)
class Params:
    """Parameter counts of the assembled model; `llm` includes the LM head and any adapters."""

    vision: int
    projector: int
    llm: int
    total: int
    trainable: int


@dataclass(frozen=True)
class Setting:
    """What a run trains: the projector only, LoRA adapters too, or the whole LLM too."""

    name: str
    train_llm: bool = False
    lora_rank: int = 0


@dataclass(frozen=True)
class LlmShape:
    """The LLM dimensions that activation memory depends on."""

    hidden: int
    intermediate: int
    layers: int
    kv_width: int  # key/value heads x head dimension (smaller than hidden under GQA)
    vocab: int

    @classmethod
    def of(cls, text_config) -> LlmShape:
        heads = text_config.num_attention_heads
        head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // heads
        kv_heads = getattr(text_config, "num_key_value_heads", None) or heads
        return cls(
            hidden=text_config.hidden_size,
            intermediate=text_config.intermediate_size,
            layers=text_config.num_hidden_layers,
            kv_width=kv_heads * head_dim,
            vocab=text_config.vocab_size,
        )


@dataclass(frozen=True)
class Memory:
    """Estimated peak memory of one GPU, GiB (2**30 bytes, as nvidia-smi counts)."""

    weights: float
    gradients: float
    optimizer: float
    activations: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations


@dataclass(frozen=True)
class Fit:
    """Whether one setting fits one GPU layout."""

    setting: str
    zero: int
    gpus: int
    gpu_memory_gb: float
    need_gb: float | None  # None: the combination is not supported
    fits: bool

    @property
    def line(self) -> str:
        where = f"{self.setting}, ZeRO-{self.zero} on {self.gpus}x{self.gpu_memory_gb:g} GB"
        if self.need_gb is None:
            return f"{where}: not supported (LoRA is merged at the end; use ZeRO-2)"
        return f"{where}: {self.need_gb:.1f} GB per GPU: {'yes' if self.fits else 'no'}"


@dataclass(frozen=True)
class Plan:
    """What `plan.json` holds."""

    stage: int
    setting: str
    vision: str
    llm: str
    vision_family: str  # towers.py's family: clip, siglip
    projector: str  # linear or mlp2x_gelu
    feature_layer: int  # the vision layer whose patch features are used
    template: str
    group_by_length: bool
    records: int
    epochs: float
    steps: int
    global_batch: int
    micro_batch: int
    accumulation: int
    gpus: int
    precision: str
    gradient_checkpointing: bool
    max_length: int
    mean_tokens: float  # per sequence, image tokens included, after the --max-length cut
    max_tokens: int
    tokens_per_step: int
    image_tokens_per_sample: float
    params: Params
    memory_gb: dict[str, Memory]  # "zero0", "zero2", "zero3": per GPU at --gpus
    fits: list[Fit]
    flops_per_token: float
    hours: float | None  # with --gpu-tflops and --mfu
    gpu_hours: float | None

    def to_json(self) -> dict:
        out = asdict(self)
        out["memory_gb"] = {
            zero: {**{k: round(v, 2) for k, v in asdict(m).items()}, "total": round(m.total, 2)}
            for zero, m in self.memory_gb.items()
        }
        out["fits"] = [{**asdict(f), "line": f.line} for f in self.fits]
        return out


def plan_run(
    cfg: TrainConfig,
    gpus: int = 1,
    gpu_memory_gb: float = 80.0,
    gpu_tflops: float | None = None,
    mfu: float | None = None,
) -> Plan:
    """Plan the run `cfg` would make on `gpus` GPUs of `gpu_memory_gb` each, reading no weight.

    `gpu_tflops` (peak dense bf16 TFLOP/s of one GPU) and `mfu` (the share of it the run
    reaches, 0-1) turn FLOPs into hours; without them hours are left out.
    """
    recipe = RECIPES.get(cfg.stage)
    if recipe is None:
        raise InputError(f"--stage must be 1 or 2, got {cfg.stage}")
    if gpus < 1:
        raise InputError(f"--gpus must be at least 1, got {gpus}")
    if (gpu_tflops is None) != (mfu is None) or (mfu is not None and not 0 < mfu <= 1):
        raise InputError("give both --gpu-tflops and --mfu (a share between 0 and 1), or neither")
    if gpu_tflops is not None and gpu_tflops <= 0:
        raise InputError(f"--gpu-tflops must be more than 0, got {gpu_tflops:g}")
    if gpu_memory_gb <= 0:
        raise InputError(f"--gpu-memory-gb must be more than 0, got {gpu_memory_gb:g}")
    meta = planned_towers(cfg)
    global_batch = cfg.global_batch or recipe.global_batch
    epochs = cfg.epochs if cfg.epochs is not None else recipe.epochs
    accum = accumulation(global_batch, cfg.micro_batch, gpus)
    bf16 = cfg.precision in ("auto", "bf16")  # auto: the GPUs being planned for have bf16
    if cfg.precision not in ("auto", "bf16", "fp32"):
        raise InputError(f"--precision must be auto, bf16 or fp32, got {cfg.precision!r}")

    records = parse_records(read_json(cfg.data), Path(cfg.data))
    tokenizer = check_data(records, meta, cfg.data)
    meta = with_tower_family(meta)
    towers = Towers(meta.vision, meta.llm, meta.projector, meta.feature_layer)
    model = build_empty_model(towers, tokenizer)
    per_image = tokens_per_image(model.config.vision_config)
    lengths, images = sequence_lengths(
        records,
        meta.template,
        tokenizer,
        model.config.image_token_index,
        per_image,
        cfg.max_length,
        meta.system,
    )
    mean_tokens = sum(lengths) / len(lengths) if lengths else 0.0
    max_tokens = max(lengths, default=0)
    grouped = group_by_length(cfg)
    batches = (
        grouped_batches_per_epoch([bool(r.images) for r in records], cfg.micro_batch)
        if grouped
        else math.ceil(len(records) / cfg.micro_batch)
    )
    steps = optimizer_steps(math.ceil(batches / gpus), accum, epochs, cfg.max_steps)
    tokens_per_step = round(global_batch * mean_tokens)

    chosen = _setting(cfg)
    counts = _counts(model)
    params = _params(counts, chosen)
    shape = LlmShape.of(model.config.text_config)
    memory = {
        f"zero{zero}": memory_per_gpu(
            params, chosen, shape, zero, gpus, bf16, cfg.micro_batch, accum, max_tokens,
            cfg.gradient_checkpointing,
        )
        for zero in ZERO_STAGES
    }  # fmt: skip
    fits = [
        _fit(
            setting, _params(counts, setting), shape, zero, n, gpu_memory_gb, bf16, cfg, max_tokens
        )
        for setting in _settings(cfg.stage, cfg.lora_rank)
        for n in sorted({1, gpus})
        for zero in ZERO_STAGES
    ]
    image_share = sum(images) * per_image / sum(lengths) if lengths else 0.0
    flops = flops_per_token(counts, chosen, image_share)
    hours = gpu_hours = None
    if gpu_tflops is not None and mfu is not None:
        seconds = steps * tokens_per_step * flops / (gpus * gpu_tflops * 1e12 * mfu)
        hours, gpu_hours = seconds / 3600, seconds * gpus / 3600
    return Plan(
        stage=cfg.stage,
        setting=chosen.name,
        vision=meta.vision,
        llm=meta.llm,
        vision_family=meta.vision_family,
        projector=meta.projector,
        feature_layer=meta.feature_layer,
        template=meta.template,
        group_by_length=grouped,
        records=len(records),
        epochs=epochs,
        steps=steps,
        global_batch=global_batch,
        micro_batch=cfg.micro_batch,
        accumulation=accum,
        gpus=gpus,
        precision="bf16" if bf16 else "fp32",
        gradient_checkpointing=cfg.gradient_checkpointing,
        max_length=cfg.max_length,
        mean_tokens=round(mean_tokens, 1),
        max_tokens=max_tokens,
        tokens_per_step=tokens_per_step,
        image_tokens_per_sample=round(sum(images) * per_image / max(1, len(images)), 1),
        params=params,
        memory_gb=memory,
        fits=fits,
        flops_per_token=flops,
        hours=hours,
        gpu_hours=gpu_hours,
    )


def sequence_lengths(
    records,
    template: str,
    tokenizer,
    image_token_id: int,
    per_image: int,
    max_length: int,
    system: str | None = None,
) -> tuple[list[int], list[int]]:
    """Tokens per record (image tokens included, after the cut) and images each one keeps."""
    lengths, images = [], []
    bos = wants_bos(template, tokenizer)
    for start in range(0, len(records), _TOKENIZE_CHUNK):
        chunk = [
            template_pieces(r, template, tokenizer, system)
            for r in records[start : start + _TOKENIZE_CHUNK]
        ]
        for example in tokenize_many(chunk, tokenizer, image_token_id, per_image, max_length, bos):
            lengths.append(len(example.input_ids))
            images.append(example.n_images)
    return lengths, images


def memory_per_gpu(
    params: Params,
    setting: Setting,
    shape: LlmShape,
    zero: int,
    gpus: int,
    bf16: bool,
    micro_batch: int,
    accumulation: int,
    seq_len: int,
    checkpointing: bool,
) -> Memory:
    """Peak memory of one GPU, GiB, for ZeRO stage `zero` (0: plain accelerate / DDP).

    Bytes per parameter, with T trainable, F frozen and P = T + F parameters, N GPUs:
    - ZeRO-0 (what `train` does without DeepSpeed): trained weights stay fp32 (4 bytes),
      frozen ones are 2 bytes in bf16 (4 when the whole LLM trains: then the model is loaded
      in fp32); gradients 4 T (twice that on several GPUs: DDP's reduction buckets); AdamW
      moments 8 T (fused: no temporary). Autocast's bf16 copies of the trained weights (2 T)
      live only during the forward pass, while gradients are unset, except under gradient
      accumulation: then they count too.
    - ZeRO-2 (DeepSpeed, bf16): weights 2 P; gradients 2 T / N; fp32 master weights and
      moments 12 T / N.  ZeRO-3: also the weights are split, 2 P / N.
    In fp32 the 2-byte figures are 4, and the optimizer holds 8 T / N (no master copy).
    Activations come from `activation_bytes`.
    """
    trained, frozen = params.trainable, params.total - params.trainable
    act = 2 if bf16 else 4
    if zero == 0:
        frozen_bytes = 4 if setting.train_llm or not bf16 else 2
        weights = frozen * frozen_bytes + trained * (6 if bf16 and accumulation > 1 else 4)
        gradients = trained * 4 * (2 if gpus > 1 else 1)
        optimizer = trained * 8
    else:
        weights = params.total * act / (gpus if zero == 3 else 1)
        gradients = trained * act / gpus
        optimizer = trained * (12 if bf16 else 8) / gpus
    activations = activation_bytes(shape, micro_batch, seq_len, checkpointing, act)
    return Memory(weights / GIB, gradients / GIB, optimizer / GIB, activations / GIB)


def activation_bytes(
    shape: LlmShape, micro_batch: int, seq_len: int, checkpointing: bool, width: int
) -> float:
    """Bytes autograd keeps for one micro-batch of `seq_len`-token sequences (`width` bytes
    per value: 2 in bf16).

    Per token and decoder layer a Llama-style layer with fused attention (no score matrix)
    keeps about 12 h + 2 kv + 4 i values: the two norms' inputs (kept in fp32, counted 3 h
    each), the attention inputs, rotated queries and keys, values, the attention output and
    the o_proj input, and the MLP's gate, up, activation and product. With gradient
    checkpointing only each layer's input (h values) is kept, and one layer is recomputed at
    a time. The logits cost 14 bytes per vocabulary entry and token in bf16: fp32
    log-probabilities kept for backward, the fp32 copy of the logits that mixed precision
    returns, their fp32 gradient and its bf16 cast (12 in fp32: no copy, no cast, but
    4-byte logits). The frozen vision tower keeps nothing (no gradient flows into it).
    """
    tokens = micro_batch * seq_len
    h, i, kv = shape.hidden, shape.intermediate, shape.kv_width
    layer = tokens * (12 * h + 2 * kv + 4 * i) * width
    kept = shape.layers * tokens * h * width + layer if checkpointing else shape.layers * layer
    logits = tokens * shape.vocab * (14 if width == 2 else 12)
    embeddings = 2 * tokens * h * width  # token embeddings and the copy images are merged into
    return kept + logits + embeddings


def flops_per_token(counts: dict[str, int], setting: Setting, image_share: float) -> float:
    """Training FLOPs per sequence token: 2 per weight forward, 2 more backward to the inputs
    (gradients flow back to the projector in every stage), 2 more per trained weight. The
    frozen vision tower runs forward only, and it and the projector see only the image share
    of the tokens. Embedding lookups cost nothing; recomputation under gradient checkpointing
    is not counted (MFU does not count it either)."""
    llm = counts["llm"] - counts["embeddings"]
    trained = counts["lora_per_rank"] * setting.lora_rank
    if setting.train_llm:
        trained += counts["llm_trained"] - counts["embeddings"]
    image = 2 * counts["vision"] + 4 * counts["projector"]
    return image * image_share + 4 * llm + 2 * trained


def planned_towers(cfg: TrainConfig) -> TrainedWith:
    """Towers of the run; a stage-2 plan may name them with --vision/--llm instead of a
    stage-1 folder, so that both stages are planned before either runs."""
    if cfg.stage == 2 and cfg.projector_from is None and cfg.vision and cfg.llm:
        return TrainedWith(
            stage=2,
            vision=cfg.vision,
            llm=cfg.llm,
            projector=cfg.projector,
            feature_layer=cfg.feature_layer,
            template=cfg.template or RECIPES[2].template,
            pad_to_square=cfg.pad_to_square,
            system=cfg.system,
        )
    return trained_with(cfg, RECIPES[cfg.stage])


def _setting(cfg: TrainConfig) -> Setting:
    if cfg.stage == 1:
        return Setting("stage 1")
    if cfg.lora_rank:
        return Setting(f"LoRA r{cfg.lora_rank} stage 2", lora_rank=cfg.lora_rank)
    if cfg.freeze_llm:
        return Setting("stage 2, LLM frozen")
    return Setting("full stage 2", train_llm=True)


def _settings(stage: int, lora_rank: int) -> list[Setting]:
    """The settings a plan weighs: stage 1, or the three ways to run stage 2."""
    if stage == 1:
        return [Setting("stage 1")]
    rank = lora_rank or PLAN_LORA_RANK
    return [
        Setting("full stage 2", train_llm=True),
        Setting(f"LoRA r{rank} stage 2", lora_rank=rank),
        Setting("stage 2, LLM frozen"),
    ]


def _counts(model) -> dict[str, int]:
    """Parameter counts of the meta model by part, and what each kind of run trains."""

    def count(module) -> int:
        return sum(p.numel() for p in module.parameters())

    set_trainable(model, train_llm=False)
    projector_trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    set_trainable(model, train_llm=True)
    all_trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    inner = model.model
    vision, projector = count(inner.vision_tower), count(inner.multi_modal_projector)
    return {
        "vision": vision,
        "projector": projector,
        "llm": count(model) - vision - projector,  # the language model and its LM head
        "projector_trained": projector_trained,
        "llm_trained": all_trained - projector_trained,
        "embeddings": inner.language_model.get_input_embeddings().weight.numel(),
        "lora_per_rank": lora_params(model, 1),
    }


def _params(counts: dict[str, int], setting: Setting) -> Params:
    adapters = counts["lora_per_rank"] * setting.lora_rank
    llm = counts["llm"] + adapters
    trainable = counts["projector_trained"] + adapters
    if setting.train_llm:
        trainable += counts["llm_trained"]
    total = counts["vision"] + counts["projector"] + llm
    return Params(counts["vision"], counts["projector"], llm, total, trainable)


def _fit(setting, params, shape, zero, gpus, gpu_memory_gb, bf16, cfg, seq_len) -> Fit:
    if setting.lora_rank and zero == 3:
        return Fit(setting.name, zero, gpus, gpu_memory_gb, None, False)
    global_batch = cfg.global_batch or RECIPES[cfg.stage].global_batch
    accum = accumulation(global_batch, cfg.micro_batch, gpus)
    need = memory_per_gpu(
        params, setting, shape, zero, gpus, bf16, cfg.micro_batch, accum, seq_len,
        cfg.gradient_checkpointing,
    ).total  # fmt: skip
    fits = need <= FIT_SHARE * gpu_memory_gb
    return Fit(setting.name, zero, gpus, gpu_memory_gb, round(need, 1), fits)


def write_plan(plan: Plan, output: Path) -> Path:
    """Write `plan.json` into the output folder (atomically)."""
    path = Path(output) / PLAN_FILE
    Path(output).mkdir(parents=True, exist_ok=True)
    write_json(path, plan.to_json(), indent=2)
    return path


def plan_lines(plan: Plan) -> list[str]:
    """The plan as a reader wants it on the terminal."""
    p = plan.params
    lines = [
        f"towers: {plan.vision} ({plan.vision_family}) + {plan.llm}, template {plan.template}"
        + (", length-grouped batches" if plan.group_by_length else ""),
        f"plan: {plan.setting}, {plan.records:,} records, {plan.steps:,} steps of "
        f"{plan.global_batch} sequences ({plan.micro_batch} x {plan.gpus} GPU(s) x "
        f"{plan.accumulation} accumulation), {plan.precision}, max length {plan.max_length}",
        f"parameters: vision {p.vision:,}  projector {p.projector:,}  llm {p.llm:,}  "
        f"total {p.total:,}  trainable {p.trainable:,}",
        f"tokens: {plan.mean_tokens:,.0f} per sequence on average, {plan.max_tokens:,} at most, "
        f"{plan.image_tokens_per_sample:g} image tokens per sample, "
        f"{plan.tokens_per_step:,} per step",
        f"memory per GPU on {plan.gpus} GPU(s), GB: weights + gradients + optimizer + "
        "activations = total",
    ]
    for zero, m in plan.memory_gb.items():
        lines.append(
            f"  ZeRO-{zero[-1]}: {m.weights:.1f} + {m.gradients:.1f} + {m.optimizer:.1f} + "
            f"{m.activations:.1f} = {m.total:.1f}"
        )
    lines.append("fits:")
    lines += [f"  {fit.line}" for fit in plan.fits]
    if plan.hours is not None:
        lines.append(
            f"time: {plan.hours:,.1f} h on {plan.gpus} GPU(s), {plan.gpu_hours:,.1f} GPU-hours "
            f"({plan.flops_per_token / 1e9:,.1f} GFLOP per token)"
        )
    return lines
