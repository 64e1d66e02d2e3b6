"""`train --dry-run` for the 2023 pair and the 2026 pair, side by side, from configs/towers.

    .venv/bin/python benchmarks/train_plans.py

2023: CLIP ViT-L/14 at 336 px + Vicuna-7B v1.5, template v1 (LLaVA 1.5). 2026: SigLIP so400m/14
at 384 px + Qwen2-7B-Instruct, template chat (the LLaVA-OneVision pair). The towers are the
config-only folders of configs/towers (public shapes, no weights); the LLM folders get a
stand-in tokenizer trained on the data (the real tokenizers are not stored here), so token
lengths are close to, not equal to, the real ones. The data is train_batches.py's mix (LLaVA
GPT-4 answers and ScienceQA). Full stage 2, 8 GPUs of 80 GB, bf16, gradient checkpointing.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import transformers

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from train_batches import mix  # noqa: E402
from train_tiny import build_chatml_tokenizer, build_tokenizer  # noqa: E402

from instructgen.train.loop import TrainConfig  # noqa: E402
from instructgen.train.plan import plan_lines, plan_run  # noqa: E402

TOWERS = ROOT / "configs" / "towers"
PAIRS = (  # name, vision folder, LLM folder, template
    ("2023: CLIP-L/336 + Vicuna-7B", "clip-vit-large-patch14-336", "vicuna-7b-v1.5", "v1"),
    ("2026: SigLIP so400m/384 + Qwen2-7B", "siglip-so400m-patch14-384", "qwen2-7b-instruct",
     "chat"),
)  # fmt: skip
PEAK_TFLOPS, MFU = 989, 0.4  # H100 SXM dense bf16; a share a well-tuned run reaches


def main() -> None:
    transformers.utils.logging.disable_progress_bar()
    records = mix()
    texts = [turn["value"] for r in records for turn in r["conversations"]]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "mix.json"
        data.write_text(json.dumps(records))
        for name, vision, llm, template in PAIRS:
            folder = root / llm
            shutil.copytree(TOWERS / llm, folder)
            tokenizer = (
                build_chatml_tokenizer(texts, vocab_size=8000)
                if template == "chat"
                else build_tokenizer(texts)
            )
            tokenizer.save_pretrained(folder)
            cfg = TrainConfig(
                stage=2, data=data, images=ROOT / "tests" / "data" / "train_images",
                output=root / "plan", vision=str(TOWERS / vision), llm=str(folder),
                template=template, micro_batch=4, global_batch=128,
            )  # fmt: skip
            plan = plan_run(cfg, gpus=8, gpu_memory_gb=80.0, gpu_tflops=PEAK_TFLOPS, mfu=MFU)
            print(f"## {name}")
            for line in plan_lines(plan):
                print(line)
            flops = plan.flops_per_token * plan.mean_tokens * 100_000
            per_100k = flops / (PEAK_TFLOPS * 1e12 * MFU)
            print(
                f"GPU-hours per 100K records of this mix and epoch at MFU {MFU}: "
                f"{per_100k / 3600:.2f}\n"
            )


if __name__ == "__main__":
    main()
