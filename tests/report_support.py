"""A complete run folder for the report tests, laid out as `make recipe` writes it.

The data part is real: `build` runs on the build fixtures of tests/data, and the journal is
filled through the client's own Journal from those real responses (usage and list prices).
The training logs, plans, judge summary, POPE, ScienceQA and CHAIR files are small files in
the formats their commands write (train/loop.py, train/plan.py, eval/judge.py, issue 22's
POPE and CHAIR contracts, scienceqa/problems.py), with hand-picked figures.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from instructgen.cli import app
from instructgen.client.journal import Journal, Outcome
from instructgen.client.pricing import cost_usd


def write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1) + "\n")


def write_lines(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def fill_journal(journal: Path, requests: Path, responses: Path) -> None:
    """The journal a finished `run` leaves: each request done (with usage and cost) or failed."""
    lines = requests.read_text().splitlines()
    with Journal(journal) as j:
        j.sync(
            [
                (json.loads(line)["custom_id"], n, hashlib.sha256(line.encode()).hexdigest())
                for n, line in enumerate(lines, 1)
            ],
            resend_changed=False,
        )
        ids = {json.loads(line)["custom_id"] for line in lines}
        for line in responses.read_text().splitlines():
            obj = json.loads(line)
            if obj["custom_id"] not in ids:
                continue
            if obj.get("error"):
                j.finish(obj["custom_id"], Outcome("failed", error_code=obj["error"]["code"]))
                continue
            usage = obj["response"]["body"]["usage"]
            prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
            j.finish(
                obj["custom_id"],
                Outcome(
                    "done", 200, obj["response"]["body"], "stop", prompt, completion, 0,
                    cost_usd("gpt-4o", prompt, completion),
                ),
            )  # fmt: skip


def train_log(lr: float, steps: int, loss0: float) -> list[dict]:
    return [
        {
            "step": s,
            "epoch": round(s / steps, 4),
            "loss": round(loss0 / (1 + 0.3 * s), 5),
            "lr": lr * (1 - (s - 1) / steps),
            "grad_norm": 0.5,
            "tokens_per_s": 1234.5 + s,
        }
        for s in range(1, steps + 1)
    ]


def plan(stage: int, records: int, steps: int) -> dict:
    return {
        "stage": stage, "setting": "projector only" if stage == 1 else "full stage 2",
        "vision": "openai/clip-vit-large-patch14-336", "llm": "lmsys/vicuna-7b-v1.5",
        "vision_family": "clip", "projector": "mlp2x_gelu", "feature_layer": -2,
        "records": records, "epochs": 1 if stage == 1 else 3, "steps": steps,
        "global_batch": 128 if stage == 1 else 32, "micro_batch": 16, "accumulation": 1,
        "gpus": 8, "precision": "bf16", "gradient_checkpointing": True, "max_length": 2048,
        "mean_tokens": 623.25, "max_tokens": 2048, "tokens_per_step": 79776,
        "image_tokens_per_sample": 576.0,
        "params": {"vision": 303_507_456, "projector": 4_198_400, "llm": 6_738_415_616,
                   "total": 7_046_121_472, "trainable": 4_198_400 if stage == 1 else 6_742_614_016},
        "memory_gb": {"zero0": {"weights": 13.1, "gradients": 0.02, "optimizer": 0.05,
                                "activations": 3.2, "total": 16.37}},
        "fits": [], "flops_per_token": 4.2e10, "hours": 3.5 if stage == 1 else 10.25,
        "gpu_hours": 28.0 if stage == 1 else 82.0,
    }  # fmt: skip


def trained_with(stage: int) -> dict:
    return {
        "stage": stage, "vision": "openai/clip-vit-large-patch14-336",
        "llm": "lmsys/vicuna-7b-v1.5", "projector": "mlp2x_gelu", "feature_layer": -2,
        "template": "plain" if stage == 1 else "v1", "pad_to_square": False,
        "vision_family": "clip",
    }  # fmt: skip


def chair_stats(chair_i: float, chair_s: float, recall: float, mentions: int) -> dict:
    hallucinated = round(chair_i * mentions)
    return {
        "chair_i": chair_i, "chair_s": chair_s, "recall": recall, "mentions": mentions,
        "hallucinated": hallucinated, "records": 6,
    }  # fmt: skip


def pope_split(n: int, accuracy: float, precision: float, recall: float, yes: float) -> dict:
    f1 = 2 * precision * recall / (precision + recall)
    return {
        "n": n, "accuracy": accuracy, "precision": precision, "recall": recall, "f1": f1,
        "yes_ratio": yes, "missing": 1,
    }  # fmt: skip


def make_run(test_data: Path, run: Path, random_weights: bool = False) -> Path:
    """Fill `run` with every file the report reads; returns `run`."""
    data = run / "data"
    data.mkdir(parents=True)
    for name in ("requests", "responses", "contexts"):
        shutil.copy(test_data / f"build_{name}.jsonl", data / f"{name}.jsonl")
    result = CliRunner().invoke(
        app,
        ["build", str(data / "responses.jsonl"), "--requests", str(data / "requests.jsonl"),
         "--contexts", str(data / "contexts.jsonl"), "-o", str(data / "llava"), "--seed", "3"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    fill_journal(data / "journal.sqlite", data / "requests.jsonl", data / "responses.jsonl")
    write(
        run / "eval" / "chair.json",
        {
            "overall": chair_stats(0.125, 0.5, 0.625, 40),
            "by_task": {
                "conversation": chair_stats(0.1, 0.5, 0.5, 20),
                "detail": chair_stats(0.2, 1.0, 0.75, 10),
                "complex_reasoning": chair_stats(0.1, 0.0, 0.25, 10),
            },
            "records": [],
        },
    )
    (data / ".coco-settings").write_text("captions.json instances.json 1000\n")
    (run / "settings").mkdir()
    (run / "settings" / "stage1").write_text("clip vicuna pretrain.json 8 zero2\n")
    for stage, steps, records in ((1, 5, 4600), (2, 7, 158000)):
        folder = run / f"stage{stage}"
        write_lines(folder / "train_log.jsonl", train_log(2e-3 if stage == 1 else 2e-5, steps, 6.0))
        write(folder / "plan.json", plan(stage, records, steps))
        write(folder / "instructgen_train.json", trained_with(stage))
        schedule = {
            "records": records, "seed": 0, "global_batch": 128 if stage == 1 else 32,
            "micro_batch": 16, "devices": 8, "steps": steps, "lr": 2e-3, "warmup_ratio": 0.03,
        }  # fmt: skip
        for step in (2, 4):  # the newest is the one that counts
            state = {"step": step, "epoch": 0, "batches_in_epoch": step, "schedule": schedule}
            write(folder / f"checkpoint-{step}" / "trainer_state.json", state)
    judge = run / "eval" / "judge"
    judge.mkdir(parents=True)
    shutil.copy(test_data / "build_requests.jsonl", judge / "requests.jsonl")
    fill_journal(judge / "journal.sqlite", judge / "requests.jsonl", data / "responses.jsonl")
    write(
        judge / "summary.json",
        {
            "all": {"relative": 81.3, "reference_mean": 8.1, "candidate_mean": 6.585, "n": 90,
                    "unparsed": 2, "failed": 0, "missing": 0},
            "conv": {"relative": 79.2, "reference_mean": 8.0, "candidate_mean": 6.336, "n": 30,
                     "unparsed": 1, "failed": 0},
            "detail": {"relative": 70.4, "reference_mean": 7.9, "candidate_mean": 5.562,
                       "n": 30, "unparsed": 0, "failed": 0},
            "complex": {"relative": 94.1, "reference_mean": 8.4, "candidate_mean": 7.904,
                        "n": 30, "unparsed": 1, "failed": 0},
            "judge": {"model": "gpt-4o", "temperature": 0.2, "swap": False, "compat": None},
        },
    )  # fmt: skip
    splits = {
        "random": pope_split(2910, 0.871, 0.9, 0.83, 0.461),
        "popular": pope_split(3000, 0.853, 0.87, 0.83, 0.477),
        "adversarial": pope_split(3000, 0.812, 0.8, 0.83, 0.519),
    }
    average = {
        m: sum(s[m] for s in splits.values()) / 3
        for m in ("accuracy", "precision", "recall", "f1", "yes_ratio")
    }
    write(
        run / "eval" / "pope" / "result.json",
        {"splits": splits, "average": average, "missing": [17, 2044, 5012],
         "published": {"LLaVA-1.5-7B F1, average of the splits (published)": 85.9}},
    )  # fmt: skip
    breakdown = dict(
        zip(
            ("NAT", "SOC", "LAN", "TXT", "IMG", "NO", "G1-6", "G7-12", "Avg"),
            (88.5, 92.25, 85.0, 87.75, 84.5, 89.0, 90.1, 86.2, 88.64),
            strict=True,
        )
    )
    write(
        run / "eval" / "scienceqa" / "result.json",
        {"acc": 88.64, "correct": 320, "count": 361, "unparsed": [], "missing": [],
         "results": {}, "breakdown": breakdown},
    )  # fmt: skip
    write_lines(
        run / "eval" / "questions.jsonl",
        [{"question_id": i, "image": "x.jpg", "text": "q", "category": c}
         for i, c in enumerate(["conv", "detail", "complex", "conv"])],
    )  # fmt: skip
    write_lines(
        run / "eval" / "answers.jsonl",
        [{"question_id": i, "prompt": "q", "text": "a", "answer_id": str(i),
          "model_id": "stage2", "metadata": {}} for i in range(4)],
    )  # fmt: skip
    if random_weights:
        write(run / "towers" / "random_weights.json", {"random_weights": True})
    return run
