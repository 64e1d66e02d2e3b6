"""Trainer throughput and peak memory, against a bare LLM and the dry-run plan's estimate.

Three runs: stage 1, stage 2 with LoRA r64, full stage 2.

    .venv/bin/python benchmarks/train.py                       # CPU, small towers (default)
    .venv/bin/python benchmarks/train.py --precision bf16 --checkpointing   # GPU path, on CPU
    python benchmarks/train.py --size 7b                       # one GPU: ViT-L/14-336 + 7B Llama

Towers are built from configs with random weights (nothing is downloaded) and saved to a temp
folder; the real `train()` loop runs on the test records and COCO images (cycled). The final
export is skipped: it is not what is measured (and a 7B export is 13-27 GB of disk). The
baseline is a bare `LlamaForCausalLM` of the same size, forward and backward on text of the
same mean length: the cost of the LLM alone. Each run is first planned by `plan_run` (what
`train --dry-run` prints); on CUDA a run the plan says does not fit is skipped, and the table
puts the measured peak memory (`max_memory_allocated`) beside the plan's ZeRO-0 estimate.
MFU is the plan's FLOPs per token times tokens/s over the GPU's peak dense bf16 FLOP/s.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from train_tiny import build_tokenizer  # noqa: E402

from instructgen.train import loop  # noqa: E402
from instructgen.train.data import read_records, template_pieces, tokenize_pieces  # noqa: E402
from instructgen.train.loop import LOG_FILE, TrainConfig, train  # noqa: E402
from instructgen.train.model import load_tokenizer  # noqa: E402
from instructgen.train.plan import FIT_SHARE, GIB, plan_run  # noqa: E402

DATA = ROOT / "tests" / "data"
SIZES = {
    # CPU-sized: 64 image tokens, a 4-layer 256-wide LLM.
    "small": (
        dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
             image_size=112, patch_size=14),
        dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=4),
    ),
    # The paper's towers: CLIP ViT-L/14 at 336 px (576 patch tokens) and a LLaMA/Vicuna-7B.
    "7b": (
        dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
             num_attention_heads=16, image_size=336, patch_size=14),
        dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
             num_attention_heads=32, num_key_value_heads=32, vocab_size=32000),
    ),
}  # fmt: skip
# Peak dense bf16 TFLOP/s by GPU name (SXM parts); --peak-tflops for any other.
PEAK_TFLOPS = {"H200": 989, "H100": 989, "A100": 312}
RUNS = (  # name, stage, LoRA rank (0: none), as `train` runs them
    ("stage 1", 1, 0),
    ("stage 2 LoRA r64", 2, 64),
    ("stage 2 full", 2, 0),
)


def build_towers(root: Path, size: str) -> tuple[Path, Path, LlamaConfig]:
    """Random-weight towers of `size` saved like pretrained ones; returns folders and config."""
    vision_kw, llm_kw = SIZES[size]
    texts = [
        turn.text
        for name in ("train_pretrain.json", "train_instruct.json")
        for record in read_records(DATA / name, DATA / "train_images")
        for turn in record.turns
    ]
    tokenizer = build_tokenizer([*texts, "USER: ASSISTANT:", __doc__])
    llm_kw = {"vocab_size": len(tokenizer) + 1, **llm_kw}  # + 1: the <image> token
    dtype = torch.bfloat16 if size == "7b" else torch.float32
    # Random initialisation of 7B weights takes minutes on CPU and seconds on a GPU.
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        vision = CLIPVisionModel(CLIPVisionConfig(**vision_kw)).to(dtype)
        vision.save_pretrained(root / "vision")
        del vision
        config = LlamaConfig(**llm_kw, max_position_embeddings=4096, tie_word_embeddings=False)
        llm = LlamaForCausalLM(config).to(dtype)
        llm.save_pretrained(root / "llm")
        del llm
    side = vision_kw["image_size"]
    CLIPImageProcessor(
        size={"shortest_edge": side}, crop_size={"height": side, "width": side}
    ).save_pretrained(root / "vision")
    tokenizer.save_pretrained(root / "llm")
    _free()
    return root / "vision", root / "llm", config


def mean_length(llm: Path, tokens_per_image: int) -> int:
    """Mean tokens per stage-2 sequence of the test records (image tokens included)."""
    tokenizer = load_tokenizer(str(llm))
    records = read_records(DATA / "train_instruct.json", DATA / "train_images")
    pieces = [template_pieces(r, "v1") for r in records]
    lengths = [
        len(tokenize_pieces(p, tokenizer, 0, tokens_per_image, 2048).input_ids) for p in pieces
    ]
    return round(sum(lengths) / len(lengths))


def baseline_tokens_per_s(config: LlamaConfig, batch: int, length: int, steps: int, dtype):
    """The bare LLM, frozen, forward and backward to its input embeddings on random text (the
    LLM's share of a stage-1 step): tokens/s after one warm-up step."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype).requires_grad_(False)
    embeds = torch.randn(batch, length, config.hidden_size, device=device, dtype=dtype)
    embeds.requires_grad_(True)
    labels = torch.randint(0, config.vocab_size, (batch, length), device=device)
    for i in range(steps + 1):
        if i == 1:
            _sync()
            start = time.perf_counter()
        model(inputs_embeds=embeds, labels=labels).loss.backward()
        embeds.grad = None
    _sync()
    del model
    _free()
    return batch * length * steps / (time.perf_counter() - start)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def stage_config(stage: int, lora: int, root: Path, vision: Path, llm: Path, args) -> TrainConfig:
    """One run as `train` would be called for it; stage 2 starts from stage 1's projector."""
    data = "train_pretrain.json" if stage == 1 else "train_instruct.json"
    name = f"stage{stage}" + (f"-lora{lora}" if lora else "")
    return TrainConfig(
        stage=stage,
        data=DATA / data,
        images=DATA / "train_images",
        output=root / name,
        vision=str(vision),
        llm=str(llm),
        projector_from=root / "stage1" if stage == 2 else None,
        max_steps=args.warmup + args.steps,
        global_batch=args.batch,
        micro_batch=args.batch,
        gradient_checkpointing=args.checkpointing,
        precision=args.precision,
        lora_rank=lora,
        log_every=1,
        save_every=0,
        workers=2,
    )


def run_stage(cfg: TrainConfig, warmup: int) -> tuple[float, float | None]:
    """Run one stage through `train()`: (median tokens/s of the steps after warm-up, peak GiB
    allocated on the GPU, None on CPU)."""
    _free()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    train(cfg, echo=lambda _: None)
    log = [json.loads(line) for line in (cfg.output / LOG_FILE).read_text().splitlines()]
    rates = sorted(row["tokens_per_s"] for row in log[warmup:])
    peak = torch.cuda.max_memory_allocated() / GIB if torch.cuda.is_available() else None
    _free()
    return rates[len(rates) // 2], peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--steps", type=int, default=None, help="measured steps (8; 7b: 12)")
    parser.add_argument("--warmup", type=int, default=2, help="steps before measuring")
    parser.add_argument("--batch", type=int, default=None, help="sequences per step (4; 7b: 8)")
    parser.add_argument("--precision", default="auto", help="auto (bf16 on a GPU), bf16, fp32")
    parser.add_argument(
        "--checkpointing", action=argparse.BooleanOptionalAction, default=None,
        help="gradient checkpointing (default: on a GPU)",
    )  # fmt: skip
    parser.add_argument("--peak-tflops", type=float, default=None, help="GPU peak bf16 TFLOP/s")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # lines survive a run cut short by a time limit
    big = args.size == "7b"
    args.steps = args.steps or (12 if big else 8)
    args.batch = args.batch or (8 if big else 4)
    cuda = torch.cuda.is_available()
    if args.checkpointing is None:
        args.checkpointing = cuda
    device = torch.cuda.get_device_name() if cuda else "CPU"
    gpu_gib = torch.cuda.get_device_properties(0).total_memory / GIB if cuda else None
    peak_tflops = args.peak_tflops or next(
        (v for k, v in PEAK_TFLOPS.items() if cuda and k in device), None
    )
    bf16 = args.precision == "bf16" or (args.precision == "auto" and cuda)
    args.precision = "bf16" if bf16 else "fp32"  # what both the plan and the run use
    print(
        f"trainer benchmark: size {args.size}, {args.warmup}+{args.steps} steps x {args.batch} "
        f"seqs, {'bf16' if bf16 else 'fp32'}, checkpointing {'on' if args.checkpointing else 'off'}"
        f", {device}" + (f" ({gpu_gib:.0f} GiB)" if cuda else "")
    )
    loop.export_model = lambda *a, **k: None  # the export is not measured (see the docstring)
    transformers.utils.logging.disable_progress_bar()
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        vision, llm, llm_config = build_towers(root, args.size)
        print(f"towers built in {time.perf_counter() - started:.0f} s")
        vision_config = CLIPVisionConfig.from_pretrained(vision)
        image_tokens = (vision_config.image_size // vision_config.patch_size) ** 2
        length = mean_length(llm, image_tokens)
        for name, stage, lora in RUNS:
            cfg = stage_config(stage, lora, root, vision, llm, args)
            plan = plan_run(cfg, gpus=1, gpu_memory_gb=gpu_gib or 80.0)
            need = plan.memory_gb["zero0"]
            tps = peak = None
            if cuda and need.total > FIT_SHARE * gpu_gib:
                note = f"skipped: the plan needs {need.total:.1f} GiB of {gpu_gib:.0f}"
            else:
                t0 = time.perf_counter()
                try:
                    tps, peak = run_stage(cfg, args.warmup)
                    note = f"{time.perf_counter() - t0:.0f} s"
                except torch.cuda.OutOfMemoryError:
                    _free()
                    note = "out of memory"
            rows.append((name, tps, peak, plan, note))
            measured = f", {tps:,.0f} tokens/s" if tps is not None else ""
            if peak is not None:
                measured += f", peak {peak:.1f} GiB (plan {need.total:.1f})"
            print(f"{name}: {note}{measured}")
        dtype = torch.bfloat16 if bf16 else torch.float32
        base = baseline_tokens_per_s(llm_config, args.batch, length, args.steps, dtype)
    print(f"mean sequence: {length} tokens ({image_tokens} image tokens); total "
          f"{time.perf_counter() - started:.0f} s")  # fmt: skip
    print_table(rows, base, peak_tflops)


def print_table(rows, base: float, peak_tflops: float | None) -> None:
    """Throughput, MFU and peak memory against the plan's estimate, one line per run."""
    head = f"{'run':<22}{'tokens/s':>10}{'vs base':>9}{'MFU':>7}{'peak GiB':>10}{'plan GiB':>10}"
    print(f"{head}{'peak/plan':>11}  plan: weights + grads + optimizer + activations")
    for name, tps, peak, plan, note in rows:
        m = plan.memory_gb["zero0"]
        split = f"{m.weights:.1f} + {m.gradients:.1f} + {m.optimizer:.1f} + {m.activations:.1f}"
        if tps is None:
            print(f"{name:<22}{note:>46}{m.total:>10.1f}{'-':>11}  {split}")
            continue
        util = tps * plan.flops_per_token / (peak_tflops * 1e12) if peak_tflops else None
        print(
            f"{name:<22}{tps:>10,.0f}{tps / base:>8.2f}x"
            f"{f'{util:.1%}' if util is not None else '-':>7}"
            f"{f'{peak:.1f}' if peak is not None else '-':>10}{m.total:>10.1f}"
            f"{f'{peak / m.total:.2f}' if peak is not None else '-':>11}  {split}"
        )
    print(f"{'baseline: bare LLM':<22}{base:>10,.0f}{1:>8.2f}x")


if __name__ == "__main__":
    main()
