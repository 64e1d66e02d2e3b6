"""`train` and `chat` (extra [train])."""

from __future__ import annotations

from pathlib import Path

import typer

from instructgen.cli.app import app, console
from instructgen.errors import InstructgenError

# --- train, chat (extra [train]) ---


def _require_train_extra() -> None:
    """Fail in one line, with the install command, when the [train] extra is missing."""
    try:
        import accelerate  # noqa: F401
        import peft  # noqa: F401
        import PIL  # noqa: F401
        import safetensors  # noqa: F401
        import torch  # noqa: F401
        import transformers
    except ImportError as e:
        raise InstructgenError(
            f"the trainer needs the [train] extra ({e.name} is not installed): "
            "run `pip install -e '.[train]'` or `make install-train`"
        ) from None
    transformers.utils.logging.disable_progress_bar()


@app.command()
def train(
    stage: int = typer.Option(
        ..., "--stage", min=1, max=2, help="1: train the projector only; 2: projector and LLM."
    ),
    data: Path = typer.Option(
        ..., "--data", help="Training records: pretrain.json (stage 1), llava_instruct.json (2)."
    ),
    images: Path = typer.Option(..., "--images", help="Folder holding the records' image files."),
    output: Path = typer.Option(
        ..., "-o", "--output", help="Output folder: final weights, checkpoints, train_log.jsonl."
    ),
    vision: str = typer.Option(
        None,
        "--vision",
        help="Vision tower, CLIP or SigLIP (told apart by its config.json model_type): local "
        "folder or hub name, e.g. openai/clip-vit-large-patch14-336 or "
        "google/siglip-so400m-patch14-384. Stage 2 defaults to the one stage 1 used.",
    ),
    llm: str = typer.Option(
        None,
        "--llm",
        help="Causal LLM (any AutoModelForCausalLM): local folder or hub name. "
        "Stage 2 defaults to the one stage 1 used.",
    ),
    projector_from: Path = typer.Option(
        None,
        "--projector",
        help="Stage 2: the stage-1 output folder to start from. Without it, stage 2 starts "
        "from a fresh projector (no pretraining) and needs --vision and --llm.",
    ),
    projector: str = typer.Option(
        "linear",
        "--projector-type",
        help="Stage 1 (or stage 2 without --projector): linear (the paper) or mlp2x_gelu.",
    ),
    feature_layer: int = typer.Option(
        -2,
        "--feature-layer",
        help="Stage 1 (or stage 2 without --projector): vision layer whose patch features "
        "are used; -2 the second-to-last (the paper), -1 the last. Stage 2 keeps stage 1's.",
    ),
    template: str = typer.Option(
        None,
        "--template",
        help="plain (image, then caption), v1 (the paper's Vicuna layout) or chat (the LLM "
        "tokenizer's own chat template: for Qwen2, Llama 3 and other instruct LLMs). "
        "Default: plain in 1, v1 in 2.",
    ),
    system: str = typer.Option(
        None, "--system", help="--template chat: the system message of every conversation."
    ),
    pad_to_square: bool = typer.Option(
        False,
        "--pad-to-square/--no-pad-to-square",
        help="Pad images to a square before the processor (else resize + centre crop).",
    ),
    max_length: int = typer.Option(
        2048, "--max-length", help="Tokens per sequence (image tokens included); cut beyond."
    ),
    epochs: float = typer.Option(
        None, "--epochs", help="Passes over the data. Default: 1 in stage 1, 3 in stage 2."
    ),
    max_steps: int = typer.Option(
        None, "--max-steps", help="Stop after this many optimizer steps (overrides --epochs)."
    ),
    lr: float = typer.Option(
        None, "--lr", help="Peak learning rate. Default: 2e-3 in stage 1, 2e-5 in stage 2."
    ),
    batch_size: int = typer.Option(
        None,
        "--batch-size",
        help="Global batch: sequences per optimizer step, all devices. Default: 128 / 32.",
    ),
    micro_batch_size: int = typer.Option(
        4,
        "--micro-batch-size",
        help="Sequences per device per forward pass; the rest is gradient accumulation.",
    ),
    warmup_ratio: float = typer.Option(
        0.03, "--warmup-ratio", help="Fraction of steps of linear warmup before cosine decay."
    ),
    gradient_checkpointing: bool = typer.Option(
        True,
        "--gradient-checkpointing/--no-gradient-checkpointing",
        help="Recompute activations in backward: less memory, about a third slower.",
    ),
    precision: str = typer.Option(
        "auto", "--precision", help="auto (bf16 on a GPU that has it, else fp32), bf16 or fp32."
    ),
    freeze_llm: bool = typer.Option(
        False, "--freeze-llm", help="Stage 2: keep the LLM frozen, train the projector only."
    ),
    lora_rank: int = typer.Option(
        0,
        "--lora-rank",
        help="Stage 2: train LoRA adapters of this rank (alpha = 2 x rank) instead of the "
        "full LLM; merged into the export. 0: off.",
    ),
    save_every: int = typer.Option(
        500, "--save-every", help="Optimizer steps between resumable checkpoints; 0: none."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue from the newest checkpoint in the output folder."
    ),
    group_by_length: bool = typer.Option(
        None,
        "--group-by-length/--no-group-by-length",
        help="Batches of one modality (image / text-only) and similar length, shuffled: "
        "less padding. Default: on in stage 2, off in stage 1.",
    ),
    log_every: int = typer.Option(10, "--log-every", help="Optimizer steps between metric lines."),
    seed: int = typer.Option(0, "--seed", help="Seed of initialisation and data order."),
    workers: int = typer.Option(2, "--workers", help="Data-loading worker processes."),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Plan the run instead: parameters, memory per GPU (ZeRO 0/2/3), steps, hours, "
        "from the towers' configs only (no weights read); writes OUT/plan.json.",
    ),
    gpus: int = typer.Option(1, "--gpus", min=1, help="Dry run: GPUs to plan for."),
    gpu_memory_gb: float = typer.Option(
        80.0, "--gpu-memory-gb", help="Dry run: memory of one GPU, GB, to say what fits."
    ),
    gpu_tflops: float = typer.Option(
        None, "--gpu-tflops", help="Dry run: peak dense bf16 TFLOP/s of one GPU (H100: 989)."
    ),
    mfu: float = typer.Option(
        None, "--mfu", help="Dry run: share of that peak the run reaches (e.g. 0.4), for hours."
    ),
    show_sample: int = typer.Option(
        0,
        "--show-sample",
        min=0,
        help="Dry run: print the first K records as the model sees them, trained tokens "
        "highlighted, and write OUT/samples.jsonl.",
    ),
) -> None:
    """Train the LLaVA model: stage 1 (projector) or stage 2 (instruction tuning).

    Runs on one device as is, or on many under `accelerate launch --config_file
    configs/zero2.yaml -m instructgen.cli train ...` (see configs/). `--dry-run` plans the
    run first, on any machine, in seconds.
    """
    _require_train_extra()
    from instructgen.train.loop import TrainConfig
    from instructgen.train.loop import train as run_stage

    cfg = TrainConfig(
        stage=stage,
        data=data,
        images=images,
        output=output,
        vision=vision,
        llm=llm,
        projector_from=projector_from,
        projector=projector,
        feature_layer=feature_layer,
        template=template,
        system=system,
        pad_to_square=pad_to_square,
        max_length=max_length,
        epochs=epochs,
        max_steps=max_steps,
        lr=lr,
        global_batch=batch_size,
        micro_batch=micro_batch_size,
        warmup_ratio=warmup_ratio,
        gradient_checkpointing=gradient_checkpointing,
        precision=precision,
        freeze_llm=freeze_llm,
        lora_rank=lora_rank,
        save_every=save_every,
        resume=resume,
        group_by_length=group_by_length,
        log_every=log_every,
        seed=seed,
        workers=workers,
    )
    if show_sample and not dry_run:
        raise InstructgenError("--show-sample goes with --dry-run: it shows, it does not train")
    if dry_run:
        from instructgen.train.plan import plan_lines, plan_run, write_plan

        plan = plan_run(cfg, gpus, gpu_memory_gb, gpu_tflops, mfu)
        for line in plan_lines(plan):
            console.print(line, highlight=False)
        console.print(f"[green]plan written[/green] -> {write_plan(plan, output)}", highlight=False)
        if show_sample:
            _show_samples(cfg, show_sample)
        return
    result = run_stage(cfg, echo=lambda line: console.print(line, highlight=False))
    console.print(
        f"[green]stage {stage} done[/green]: {result.steps} steps in {result.seconds:.0f} s, "
        f"final loss {result.final_loss:.4f}, {result.tokens_per_s:,.0f} tokens/s, "
        f"{result.trainable_params:,} trained parameters -> {result.output}",
        highlight=False,
    )


def _show_samples(cfg, count: int) -> None:
    """Print the first `count` records with their trained tokens highlighted; write them."""
    from rich.text import Text

    from instructgen.train.samples import trained_samples, write_samples

    samples = trained_samples(cfg, count)
    for sample in samples:
        console.rule(Text(f"record {sample.id}"), style="dim")  # an id is not markup
        text = Text()
        for segment in sample.segments:
            text.append(segment.text, style="bold black on green" if segment.trained else "dim")
        console.print(text)
    console.rule(style="dim")
    console.print(
        "[bold black on green]trained[/bold black on green] tokens carry the loss; "
        "[dim]dim[/dim] ones are context only",
        highlight=False,
    )
    path = write_samples(samples, cfg.output)
    console.print(f"[green]samples written[/green] -> {path}", highlight=False)


@app.command()
def chat(
    question: str = typer.Argument(..., help="The question to ask about the image."),
    model: Path = typer.Option(
        ...,
        "--model",
        help="A folder written by `instructgen train`, or any LlavaForConditionalGeneration "
        "folder (a LLaVA model from the Hub).",
    ),
    image: Path = typer.Option(None, "--image", help="The image file to ask about."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", help="Longest answer, tokens."),
    template: str | None = typer.Option(
        None,
        "--template",
        help="plain, v1 or chat (the model's own chat template); default: the template it was "
        "trained with (for a LLaVA folder not trained here: its own chat template if it has "
        "one, else v1).",
    ),
) -> None:
    """Ask a model one question about one image (greedy decoding), prompted as `answer`
    prompts it; prints the answer."""
    _require_train_extra()
    import torch

    from instructgen.eval.generate import generate_batch, load_answerer
    from instructgen.eval.records import Question
    from instructgen.files import require_file

    if image is not None:
        require_file(image)
    cuda = torch.cuda.is_available()
    answerer = load_answerer(
        model, torch.bfloat16 if cuda else torch.float32, "cuda" if cuda else "cpu", template
    )
    asked = Question("chat", image.name if image else None, question, "chat")
    [(text, _, _)] = generate_batch(
        answerer, [asked], image.parent if image else None, max_new_tokens, temperature=0.0
    )
    print(text)
