"""The training loop for both stages, on accelerate (one process, DDP or DeepSpeed alike).

Stage 1 trains the projector on pretrain.json with the `plain` template; stage 2 starts from
the stage-1 projector (or a fresh one: no pretraining) and trains projector and LLM on
llava_instruct.json with `v1` (or the LLM's own chat template, `chat`), in length-grouped
batches (batches.py). The vision tower is frozen in both. Run it plainly, or under
`accelerate launch --config_file configs/zero3.yaml` for many GPUs: accelerate does all the
distributed work.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import get_cosine_schedule_with_warmup

from instructgen.errors import InputError
from instructgen.files import atomic_writer, read_json, write_json
from instructgen.train.batches import LengthGroupedBatches, record_length
from instructgen.train.data import (
    TEMPLATES,
    LlavaDataset,
    check_template,
    collate,
    read_records,
    require_chat_template,
)
from instructgen.train.export import (
    META_FILE,
    TrainedWith,
    export_model,
    load_projector,
    read_trained_with,
    save_projector,
)
from instructgen.train.model import (
    Towers,
    add_lora,
    build_model,
    load_image_processor,
    load_tokenizer,
    merge_lora,
    set_trainable,
    tokens_per_image,
)
from instructgen.train.towers import tower_family


@dataclass(frozen=True)
class Recipe:
    """Per-stage defaults of the paper's recipe."""

    lr: float
    global_batch: int  # sequences per optimizer step, summed over devices and accumulation
    epochs: int
    template: str


# Liu et al., "Visual Instruction Tuning" (NeurIPS 2023), Sec. 5: stage 1 on CC-595K for
# 1 epoch, lr 2e-3, batch 128; stage 2 on LLaVA-Instruct-158K for 3 epochs, lr 2e-5, batch 32.
RECIPES = {
    1: Recipe(lr=2e-3, global_batch=128, epochs=1, template="plain"),
    2: Recipe(lr=2e-5, global_batch=32, epochs=3, template="v1"),
}
# From the authors' released training scripts: warmup 3% of steps, cosine decay, no weight
# decay, sequences of at most 2048 tokens; clipping at 1.0 is the transformers Trainer default.
WARMUP_RATIO = 0.03
MAX_LENGTH = 2048
MAX_GRAD_NORM = 1.0
LOG_FILE = "train_log.jsonl"
STATE_FILE = "trainer_state.json"
TRAINED_FILE = "trained.safetensors"  # a checkpoint's trained tensors, by parameter name


@dataclass(frozen=True)
class TrainConfig:
    """Everything one stage needs; None means "the stage's recipe default" where noted."""

    stage: int
    data: Path
    images: Path
    output: Path
    vision: str | None = None  # None in stage 2: the one stage 1 recorded
    llm: str | None = None
    projector_from: Path | None = None  # stage-1 output folder (stage 2)
    projector: str = "linear"
    feature_layer: int = -2
    template: str | None = None
    system: str | None = None  # system message of the `chat` template
    pad_to_square: bool = False
    max_length: int = MAX_LENGTH
    epochs: float | None = None
    max_steps: int | None = None
    lr: float | None = None
    global_batch: int | None = None
    micro_batch: int = 4  # sequences per device per forward pass
    warmup_ratio: float = WARMUP_RATIO
    gradient_checkpointing: bool = True
    precision: str = "auto"  # auto, bf16 or fp32
    freeze_llm: bool = False
    lora_rank: int = 0
    save_every: int = 500  # optimizer steps between resumable checkpoints; 0: none
    resume: bool = False
    group_by_length: bool | None = None  # None: on in stage 2, off in stage 1
    log_every: int = 10
    seed: int = 0
    workers: int = 2


@dataclass(frozen=True)
class TrainResult:
    """The summary of a finished stage."""

    output: Path
    steps: int
    final_loss: float
    tokens_per_s: float  # non-padding tokens (image tokens included) per second, all devices
    trainable_params: int
    seconds: float


def train(cfg: TrainConfig, echo: Callable[[str], None] = print) -> TrainResult:
    """Run one stage: build the model, train it, checkpoint it, export it into `cfg.output`."""
    from accelerate import Accelerator, PartialState
    from accelerate.utils import DataLoaderConfiguration, set_seed

    recipe = RECIPES.get(cfg.stage)
    if recipe is None:
        raise InputError(f"--stage must be 1 or 2, got {cfg.stage}")
    meta = trained_with(cfg, recipe)
    lr = cfg.lr if cfg.lr is not None else recipe.lr
    global_batch = cfg.global_batch or recipe.global_batch
    epochs = cfg.epochs if cfg.epochs is not None else recipe.epochs
    processes = PartialState().num_processes
    accum = accumulation(global_batch, cfg.micro_batch, processes)
    precision = _precision(cfg.precision)
    accelerator = Accelerator(
        mixed_precision=precision,
        gradient_accumulation_steps=accum,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    if cfg.lora_rank and _zero_stage(accelerator) == 3:
        raise InputError("LoRA cannot be merged under DeepSpeed ZeRO-3; use configs/zero2.yaml")
    set_seed(cfg.seed)
    say = echo if accelerator.is_main_process else (lambda _: None)

    records = read_records(cfg.data, cfg.images)
    tokenizer = check_data(records, meta, cfg.data)
    meta = with_tower_family(meta)
    processor = load_image_processor(meta.vision)
    train_llm = cfg.stage == 2 and not cfg.freeze_llm and not cfg.lora_rank
    # Frozen towers can sit in bf16; weights the optimizer updates stay in fp32.
    load_dtype = torch.bfloat16 if precision == "bf16" and not train_llm else torch.float32
    towers = Towers(meta.vision, meta.llm, meta.projector, meta.feature_layer)
    model = build_model(towers, tokenizer, load_dtype)
    model.model.multi_modal_projector.float()
    if cfg.stage == 2 and cfg.projector_from is not None:
        load_projector(model, cfg.projector_from)
    set_trainable(model, train_llm=train_llm)
    if cfg.lora_rank:
        add_lora(model, cfg.lora_rank)
    model.config.use_cache = False
    if cfg.gradient_checkpointing:
        # Non-reentrant checkpointing needs no input that requires grad (frozen embeddings).
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # the name since transformers 5
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    params = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in params)

    per_image = tokens_per_image(model.config.vision_config)
    dataset = LlavaDataset(
        records,
        cfg.images,
        tokenizer,
        processor,
        template=meta.template,
        image_token_id=model.config.image_token_index,
        tokens_per_image=per_image,
        max_length=cfg.max_length,
        pad_to_square=cfg.pad_to_square,
        system=meta.system,
    )
    grouped = None
    batching: dict = {"batch_size": cfg.micro_batch, "shuffle": True}
    if group_by_length(cfg):
        grouped = LengthGroupedBatches(
            [record_length(r, per_image) for r in records],
            [bool(r.images) for r in records],
            cfg.micro_batch,
            cfg.seed,
        )
        batching = {"batch_sampler": grouped}
    loader = torch.utils.data.DataLoader(
        dataset,
        **batching,
        collate_fn=partial(collate, pad_token_id=tokenizer.pad_token_id),
        num_workers=cfg.workers,
        persistent_workers=cfg.workers > 0,  # don't restart workers every epoch
        # Each new iterator draws a worker seed: from its own generator, not from the global
        # one that dropout uses, so a resumed run's dropout masks are the uninterrupted run's.
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    epoch_batches = (
        len(grouped) if grouped is not None else math.ceil(len(dataset) / cfg.micro_batch)
    )
    batches_per_epoch = math.ceil(epoch_batches / processes)
    total_steps = optimizer_steps(batches_per_epoch, accum, epochs, cfg.max_steps)
    # The fused kernel updates in place: the default multi-tensor one holds a temporary as
    # large as the trained weights, 27 GB for a fully trained 7B LLM.
    fused = accelerator.device.type == "cuda"
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=fused)
    scheduler = get_cosine_schedule_with_warmup(
        optimizer, math.ceil(cfg.warmup_ratio * total_steps), total_steps
    )
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    accelerator.register_for_checkpointing(scheduler)
    _keep_checkpoints_lean(accelerator, model)

    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    step, epoch, skip = 0, 0, 0
    checkpoint = _latest_checkpoint(out) if cfg.resume else None
    # What fixes the data order and the learning rate of every step: a resume must keep it.
    schedule = {
        "records": len(dataset),
        "seed": cfg.seed,
        "global_batch": global_batch,
        "micro_batch": cfg.micro_batch,
        "devices": processes,
        "steps": total_steps,
        "lr": lr,
        "warmup_ratio": cfg.warmup_ratio,
        "group_by_length": grouped is not None,
    }
    if checkpoint:
        _check_same_towers(checkpoint, meta)
        _check_same_schedule(checkpoint, schedule)
        accelerator.load_state(str(checkpoint), **_deepspeed_kwargs(accelerator, "load"))
        state = read_json(checkpoint / STATE_FILE)
        step, epoch, skip = state["step"], state["epoch"], state["batches_in_epoch"]
        if accelerator.is_main_process:
            _drop_log_rows_after(out / LOG_FILE, step)
        say(f"resumed from {checkpoint} at step {step}")
    elif cfg.resume:
        say(f"no checkpoint in {out}: starting from step 0")
    say(
        f"stage {cfg.stage}: {len(dataset)} records, {total_steps} steps of {global_batch} "
        f"sequences ({cfg.micro_batch} x {processes} device(s) x {accum} accumulation), "
        f"lr {lr:g}, {n_trainable:,} trainable parameters, precision {precision}, "
        f"template {meta.template}, {meta.vision_family} tower"
        + (", length-grouped batches" if grouped is not None else "")
    )

    started = window_start = time.perf_counter()
    window_tokens = torch.zeros((), device=accelerator.device)
    step_loss, step_batches, last = 0.0, 0, {"loss": float("nan"), "tokens_per_s": 0.0}
    model.train()
    while step < total_steps:
        loader.set_epoch(epoch)
        if grouped is not None:  # the object itself: accelerate may wrap it for sharding
            grouped.set_epoch(epoch)
        batches = accelerator.skip_first_batches(loader, skip) if skip else loader
        for seen, batch in enumerate(batches, start=skip + 1):
            with accelerator.accumulate(model):
                output = model(**batch)
                # A batch whose answers were all cut off has no labelled token: it adds nothing.
                has_labels = bool((batch["labels"] != -100).any())
                loss = output.loss if has_labels else output.logits.sum() * 0.0
                accelerator.backward(loss)
                step_loss += loss.detach().float().item()
                step_batches += 1
                window_tokens += batch["attention_mask"].sum()
                if accelerator.sync_gradients:
                    grad_norm = accelerator.clip_grad_norm_(params, MAX_GRAD_NORM)
                optimizer.step()
                if accelerator.sync_gradients:
                    scheduler.step()
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            step += 1
            mean_loss = accelerator.reduce(
                torch.tensor(step_loss / step_batches, device=accelerator.device), "mean"
            ).item()
            step_loss, step_batches = 0.0, 0
            if step % cfg.log_every == 0 or step == total_steps:
                now = time.perf_counter()
                tokens = accelerator.reduce(window_tokens, "sum").item()
                last = {
                    "step": step,
                    "epoch": round(epoch + seen / batches_per_epoch, 4),
                    "loss": round(mean_loss, 5),
                    "lr": scheduler.get_last_lr()[0],
                    # DeepSpeed clips inside its engine and may report no norm.
                    "grad_norm": round(float(grad_norm), 5) if grad_norm is not None else None,
                    "tokens_per_s": round(tokens / (now - window_start), 1),
                }
                window_start, window_tokens = now, torch.zeros_like(window_tokens)
                say(
                    f"step {step}/{total_steps}  epoch {last['epoch']:.2f}  loss {mean_loss:.4f}"
                    f"  lr {last['lr']:.2e}  grad_norm {last['grad_norm']}"
                    f"  {last['tokens_per_s']:,.0f} tok/s"
                )
                if accelerator.is_main_process:
                    _append_log(out / LOG_FILE, last)
            if cfg.save_every and step % cfg.save_every == 0 and step < total_steps:
                _save_checkpoint(accelerator, out, meta, schedule, step, epoch, seen)
            if step >= total_steps:
                break
        else:
            epoch, skip = epoch + 1, 0
            continue
        break

    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    if cfg.lora_rank:
        merge_lora(unwrapped)
        state_dict = None
    else:
        state_dict = accelerator.get_state_dict(model)  # gathers shards under ZeRO-3
    if accelerator.is_main_process:
        if cfg.stage == 1:
            save_projector(unwrapped, out, meta, state_dict)
        else:
            export_model(unwrapped, tokenizer, processor, out, meta, state_dict)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(
        output=out,
        steps=step,
        final_loss=last["loss"],
        tokens_per_s=last["tokens_per_s"],
        trainable_params=n_trainable,
        seconds=time.perf_counter() - started,
    )


def accumulation(global_batch: int, micro_batch: int, processes: int) -> int:
    """Micro-batches per optimizer step and device, so that the global batch is met exactly."""
    accum, rest = divmod(global_batch, micro_batch * processes)
    if accum < 1 or rest:
        raise InputError(
            f"--batch-size {global_batch} is not a multiple of --micro-batch-size "
            f"{micro_batch} x {processes} device(s); change one of them"
        )
    return accum


def optimizer_steps(
    batches_per_epoch: int, accum: int, epochs: float, max_steps: int | None
) -> int:
    """Optimizer steps of a run: `max_steps`, else `epochs` passes (a last partial step counts);
    `batches_per_epoch` are the micro-batches one device sees per epoch."""
    return max_steps or max(1, math.ceil(math.ceil(batches_per_epoch / accum) * epochs))


def check_data(records, meta: TrainedWith, source: Path):
    """Lay out every record in the run's template before any tower is looked for (`chat` needs
    the tokenizer first); return the LLM's tokenizer."""
    if meta.template != "chat":
        check_template(records, meta.template, source)
    tokenizer = load_tokenizer(meta.llm)
    if meta.template == "chat":
        require_chat_template(tokenizer, meta.llm)
        check_template(records, meta.template, source, tokenizer, meta.system)
    return tokenizer


def with_tower_family(meta: TrainedWith) -> TrainedWith:
    """`meta` with the family of its vision tower, read from the tower's config."""
    return replace(meta, vision_family=tower_family(meta.vision).name)


def group_by_length(cfg: TrainConfig) -> bool:
    """Whether batches are length-grouped: as asked, else in stage 2 only."""
    return cfg.group_by_length if cfg.group_by_length is not None else cfg.stage == 2


def trained_with(cfg: TrainConfig, recipe: Recipe) -> TrainedWith:
    """Resolve towers and template: stage 2 inherits what stage 1 recorded unless overridden."""
    template = cfg.template or recipe.template
    if template not in TEMPLATES:
        raise InputError(f"--template must be one of {', '.join(TEMPLATES)}, got {template!r}")
    if cfg.system is not None and template != "chat":
        raise InputError(
            f"--system is the system message of --template chat; {template} has its own layout"
        )
    if cfg.stage == 1 and (cfg.lora_rank or cfg.freeze_llm):
        raise InputError(
            "--lora-rank and --freeze-llm are stage-2 options: stage 1 trains the projector only"
        )
    if cfg.stage == 2 and cfg.projector_from is not None:
        before = read_trained_with(cfg.projector_from)
        vision = cfg.vision or before.vision
        return TrainedWith(
            stage=2,
            vision=vision,
            llm=cfg.llm or before.llm,
            projector=before.projector,
            feature_layer=before.feature_layer,
            template=template,
            pad_to_square=cfg.pad_to_square,
            system=cfg.system,
        )
    if not cfg.vision or not cfg.llm:
        raise InputError(
            f"stage {cfg.stage} needs --vision MODEL and --llm MODEL (hub names or local folders)"
            + (", or --projector DIR (a finished stage 1)" if cfg.stage == 2 else "")
        )
    # Stage 2 without a stage-1 projector starts from a fresh one (no pretraining).
    return TrainedWith(
        stage=cfg.stage,
        vision=cfg.vision,
        llm=cfg.llm,
        projector=cfg.projector,
        feature_layer=cfg.feature_layer,
        template=template,
        pad_to_square=cfg.pad_to_square,
        system=cfg.system,
    )


def _precision(choice: str) -> str:
    """accelerate's mixed-precision name for `auto`, `bf16` or `fp32`."""
    if choice == "auto":
        bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return "bf16" if bf16 else "no"
    if choice in ("bf16", "fp32"):
        return "bf16" if choice == "bf16" else "no"
    raise InputError(f"--precision must be auto, bf16 or fp32, got {choice!r}")


def _zero_stage(accelerator) -> int | None:
    plugin = accelerator.state.deepspeed_plugin
    return plugin.zero_stage if plugin else None


def _append_log(path: Path, row: dict) -> None:
    """Add one metrics line to the JSONL log (append-only: a crash keeps the earlier lines)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def _latest_checkpoint(out: Path) -> Path | None:
    found = [p for p in _checkpoints(out) if (p / STATE_FILE).is_file()]
    return max(found, key=lambda p: int(p.name.split("-")[1]), default=None)


def _checkpoints(out: Path) -> list[Path]:
    """The trainer's own `checkpoint-<step>` folders (not a user's `checkpoint-500-copy`)."""
    return [p for p in out.glob("checkpoint-*") if p.name.split("-", 1)[1].isdigit()]


def _keep_checkpoints_lean(accelerator, model) -> None:
    """Make `save_state` / `load_state` keep only the trained tensors of the model.

    The frozen towers are not copied into checkpoints: they are loaded again from the sources
    named in the checkpoint's instructgen_train.json. Optimizer, scheduler, RNG and sampler
    states are saved by accelerate as usual. Under DeepSpeed the engine saves the model itself,
    told to leave frozen parameters out (`_deepspeed_kwargs`).
    """
    if _zero_stage(accelerator) is not None:
        return

    def trained(models) -> dict[str, torch.nn.Parameter]:
        unwrapped = accelerator.unwrap_model(models[0])
        return {name: p for name, p in unwrapped.named_parameters() if p.requires_grad}

    def save(models, weights, directory) -> None:
        weights.clear()  # accelerate would save the whole model, frozen towers included
        if accelerator.is_main_process:
            tensors = {n: p.detach().contiguous().cpu() for n, p in trained(models).items()}
            save_file(tensors, str(Path(directory) / TRAINED_FILE))

    def load(models, directory) -> None:
        params = trained(models)
        models.clear()  # loaded here, not by accelerate
        path = Path(directory) / TRAINED_FILE
        if not path.is_file():
            raise InputError(f"{directory}: no {TRAINED_FILE}; delete this checkpoint folder")
        tensors = load_file(str(path))
        if set(tensors) != set(params):
            odd = sorted(set(tensors) ^ set(params))[0]
            raise InputError(
                f"{path}: the checkpoint trained other tensors than this run (e.g. {odd}); "
                "resume with the same --stage, --lora-rank and --freeze-llm"
            )
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(tensors[name])

    accelerator.register_save_state_pre_hook(save)
    accelerator.register_load_state_pre_hook(load)


def _deepspeed_kwargs(accelerator, action: str) -> dict:
    """DeepSpeed's own switches for checkpoints without frozen parameters."""
    if _zero_stage(accelerator) is None:
        return {}
    if action == "save":
        return {"exclude_frozen_parameters": True}
    return {"load_module_strict": False}


def _check_same_towers(checkpoint: Path, meta: TrainedWith) -> None:
    """A checkpoint holds trained tensors only: the frozen parts must come from the same towers."""
    if not (checkpoint / META_FILE).is_file():
        raise InputError(
            f"{checkpoint}: no {META_FILE} (a checkpoint of an older version); delete the "
            "folder to start over"
        )
    saved = read_trained_with(checkpoint)
    if saved != meta:
        raise InputError(
            f"{checkpoint}: trained with {saved.vision} + {saved.llm} (template "
            f"{saved.template}), this run uses {meta.vision} + {meta.llm} (template "
            f"{meta.template}); resume with the same towers and settings, or use a new -o folder"
        )


def _drop_log_rows_after(path: Path, step: int) -> None:
    """Forget metric lines of steps after the checkpoint: the resumed run logs them again.
    A line cut short by the crash is dropped too."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    with atomic_writer(path) as f:
        f.write("".join(line + "\n" for line in kept))


def _check_same_schedule(checkpoint: Path, schedule: dict) -> None:
    """The data position and lr schedule of a checkpoint mean nothing under other settings."""
    saved = read_json(checkpoint / STATE_FILE).get("schedule", schedule)
    changed = [f"{k} {saved.get(k)} -> {v}" for k, v in schedule.items() if saved.get(k) != v]
    if changed:
        raise InputError(
            f"{checkpoint}: this run changes {', '.join(changed)}, so the data order or the "
            "learning rate would not continue; resume with the checkpoint's settings "
            "(--batch-size, --micro-batch-size, --max-steps, --epochs, --lr, --warmup-ratio, "
            "--seed, the data and the devices), or use a new -o folder"
        )


def _save_checkpoint(
    accelerator,
    out: Path,
    meta: TrainedWith,
    schedule: dict,
    step: int,
    epoch: int,
    batches_in_epoch: int,
) -> None:
    """Save trained tensors, optimizer, scheduler, RNG and data position; keep only the newest.

    instructgen_train.json names the towers the frozen weights are loaded from on resume.
    """
    directory = out / f"checkpoint-{step}"
    accelerator.save_state(str(directory), **_deepspeed_kwargs(accelerator, "save"))
    if accelerator.is_main_process:
        write_json(directory / META_FILE, asdict(meta), indent=2)
        # The state file is written last: a checkpoint without it is incomplete and ignored.
        state = {
            "step": step,
            "epoch": epoch,
            "batches_in_epoch": batches_in_epoch,
            "schedule": schedule,
        }
        write_json(directory / STATE_FILE, state)
        for old in _checkpoints(out):
            if old != directory:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
