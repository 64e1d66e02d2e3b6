"""Trainer throughput: stage 1 and stage 2 tokens/s next to a bare-LLM baseline.

    .venv/bin/python benchmarks/train.py                 # CPU, small towers (default)
    .venv/bin/python benchmarks/train.py --size 7b --steps 200   # GPU: ViT-L/14-336 + 7B Llama

Towers are built from configs with random weights (nothing is downloaded) and saved to a temp
folder; the real `train()` loop runs on the test records and COCO images (cycled). The baseline
is a bare `LlamaForCausalLM` of the same size trained on text of the same sequence length:
the cost of the LLM alone, without the vision tower, projector or data pipeline. On CUDA the
script also prints MFU (model FLOPs / peak bf16 FLOPs) and peak memory.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
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

from instructgen.train.data import read_records, template_pieces, tokenize_pieces  # noqa: E402
from instructgen.train.loop import LOG_FILE, TrainConfig, train  # noqa: E402
from instructgen.train.model import load_tokenizer  # noqa: E402

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
PEAK_BF16_FLOPS = 989e12  # H100 / H200 SXM dense bf16


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
    vision = CLIPVisionModel(CLIPVisionConfig(**vision_kw)).to(dtype)
    vision.save_pretrained(root / "vision")
    side = vision_kw["image_size"]
    CLIPImageProcessor(
        size={"shortest_edge": side}, crop_size={"height": side, "width": side}
    ).save_pretrained(root / "vision")
    config = LlamaConfig(**llm_kw, max_position_embeddings=4096, tie_word_embeddings=False)
    LlamaForCausalLM(config).to(dtype).save_pretrained(root / "llm")
    tokenizer.save_pretrained(root / "llm")
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


def baseline_tokens_per_s(config: LlamaConfig, batch: int, length: int, steps: int) -> float:
    """The bare LLM, frozen, forward and backward to its input embeddings on random text (the
    LLM's share of a stage-1 step, 4N FLOPs per token): tokens/s after one warm-up step."""
    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda else torch.float32
    model = LlamaForCausalLM(config).to("cuda" if cuda else "cpu", dtype).requires_grad_(False)
    embeds = torch.randn(batch, length, config.hidden_size, device=model.device, dtype=dtype)
    embeds.requires_grad_(True)
    labels = torch.randint(0, config.vocab_size, (batch, length), device=model.device)
    for i in range(steps + 1):
        if i == 1:
            _sync()
            start = time.perf_counter()
        model(inputs_embeds=embeds, labels=labels).loss.backward()
        embeds.grad = None
    _sync()
    del model
    return batch * length * steps / (time.perf_counter() - start)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_stage(stage: int, root: Path, vision: Path, llm: Path, args) -> tuple[float, float]:
    """Run one stage through `train()`; returns (median tokens/s of a step, peak GiB)."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    data = "train_pretrain.json" if stage == 1 else "train_instruct.json"
    cfg = TrainConfig(
        stage=stage,
        data=DATA / data,
        images=DATA / "train_images",
        output=root / f"stage{stage}",
        vision=str(vision),
        llm=str(llm),
        projector_from=root / "stage1" if stage == 2 else None,
        max_steps=args.steps,
        global_batch=args.batch,
        micro_batch=args.batch,
        gradient_checkpointing=torch.cuda.is_available(),
        lora_rank=args.lora if stage == 2 else 0,
        log_every=1,
        save_every=0,
        workers=2,
    )
    train(cfg, echo=lambda _: None)
    log = [json.loads(line) for line in (cfg.output / LOG_FILE).read_text().splitlines()]
    rates = sorted(row["tokens_per_s"] for row in log[1:])  # step 1 is warm-up
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
    return rates[len(rates) // 2], peak


def mfu(tokens_per_s: float, n_llm: int, n_vision: int, image_share: float, trains_llm: bool):
    """Model FLOPs utilisation: 6N per trained token (4N when the LLM is frozen: no weight
    gradients) plus 2N per token of the frozen vision tower, over the GPU's peak bf16 FLOPs."""
    per_token = (6 if trains_llm else 4) * n_llm + 2 * n_vision * image_share
    return tokens_per_s * per_token / PEAK_BF16_FLOPS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per stage")
    parser.add_argument("--batch", type=int, default=4, help="sequences per step")
    parser.add_argument("--lora", type=int, default=0, help="stage-2 LoRA rank (7b on 1 GPU)")
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"trainer benchmark: size {args.size}, {args.steps} steps x {args.batch} seqs, {device}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        vision, llm, llm_config = build_towers(root, args.size)
        vision_config = CLIPVisionConfig.from_pretrained(vision)
        image_tokens = (vision_config.image_size // vision_config.patch_size) ** 2
        length = mean_length(llm, image_tokens)
        rows = []
        for stage in (1, 2):
            tps, peak = run_stage(stage, root, vision, llm, args)
            rows.append((f"stage {stage}", tps, peak, stage == 2 and not args.lora))
        base = baseline_tokens_per_s(llm_config, args.batch, length, args.steps)
    n_llm = _llm_params(llm_config)
    n_vision = _vision_params(vision_config)
    print(f"mean sequence: {length} tokens ({image_tokens} image tokens)")
    print(f"{'run':<28}{'tokens/s':>12}{'vs baseline':>14}{'MFU':>8}{'peak GiB':>10}")
    for name, tps, peak, trains_llm in rows:
        util = mfu(tps, n_llm, n_vision, image_tokens / length, trains_llm)
        shown = f"{util:.1%}" if torch.cuda.is_available() else "-"
        print(f"{name:<28}{tps:>12,.0f}{tps / base:>13.2f}x{shown:>8}{peak:>10.1f}")
    util = f"{mfu(base, n_llm, 0, 0, False):.1%}" if torch.cuda.is_available() else "-"
    print(f"{'baseline: bare LLM fwd+bwd':<28}{base:>12,.0f}{1:>13.2f}x{util:>8}")


def _llm_params(config: LlamaConfig) -> int:
    h, i, n, v = (config.hidden_size, config.intermediate_size, config.num_hidden_layers,
                  config.vocab_size)  # fmt: skip
    return n * (4 * h * h + 3 * h * i) + 2 * v * h


def _vision_params(config: CLIPVisionConfig) -> int:
    h, i, n = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    return n * (4 * h * h + 2 * h * i)


if __name__ == "__main__":
    main()
