"""`make recipe` and `make demo-recipe`: the plan `make -n` prints, and (extra [train]) the
demo run end to end: a second run does nothing, a touched seed file reruns generation and
what follows it, nothing before."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
# `install` is an order-only prerequisite of every step; a test never reinstalls the venv.
NO_INSTALL = ["-o", f"{VENV}/bin/instructgen.stamp", f"VENV={VENV}"]
# Where a planned line comes from: the command and, for train, its stage and mode.
STEP = re.compile(
    r"instructgen (?:train --stage [12](?: --dry-run)?|[a-z0-9]+)|accelerate launch"
    r"|demo_recipe\.py [a-z0-9-]+"
)


def make(*args: str, cwd: Path = ROOT, key: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "MAKEFLAGS")}
    env["PYTHONPATH"] = str(ROOT)  # this checkout's code, whatever the venv was installed from
    if key:
        env["OPENAI_API_KEY"] = key
    return subprocess.run(
        ["make", "--no-print-directory", *NO_INSTALL, *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def steps(plan: str) -> list[str]:
    """The planned commands in order, settings-file lines left out."""
    return [
        m[0] for line in plan.splitlines() if "cmp -s" not in line for m in [STEP.search(line)] if m
    ]


def recipe_args(run: Path, *extra: str) -> list[str]:
    return [
        f"RUN={run}", "VISION=openai/clip-vit-large-patch14-336", "LLM=lmsys/vicuna-7b-v1.5",
        "CC3M=tests/data/cc3m_val_300.tsv", "CC3M_IMAGES=/data/cc3m", "IMAGES=/data/train2017",
        "EVAL_IMAGES=/data/val2014", *extra,
    ]  # fmt: skip


def test_make_n_recipe_prints_the_whole_loop_in_order(tmp_path):
    done = make("-n", "recipe", *recipe_args(tmp_path / "run"))
    assert done.returncode == 0, done.stderr
    assert steps(done.stdout) == [
        "instructgen cc3m", "instructgen coco", "instructgen render", "instructgen run",
        "instructgen build", "instructgen train --stage 1 --dry-run",
        "instructgen train --stage 1", "instructgen train --stage 2 --dry-run",
        "instructgen train --stage 2", "instructgen answer", "instructgen chair",
        "instructgen judge", "instructgen report",
    ]  # fmt: skip
    plan = done.stdout
    # LLaVA-Bench's images get no context, so no training data is made from them
    assert "--exclude-images examples/llava-bench-qa90/qa90_questions.jsonl" in plan
    assert f"--journal {tmp_path}/run/data/journal.sqlite" in plan  # generation resumes
    assert plan.count("--resume") == 2  # so does training, both stages
    assert "--dry-run" in plan.split("instructgen judge")[1]  # no key: the judge only estimates
    assert f"-o {tmp_path}/run/report.html" in plan


def test_with_a_key_the_judge_sends_and_writes_its_summary(tmp_path):
    plan = make("-n", "recipe", *recipe_args(tmp_path / "run"), key="sk-test").stdout
    judge = next(line for line in plan.splitlines() if "instructgen judge" in line)
    assert "--dry-run" not in judge
    assert f"{tmp_path}/run/eval/judge/summary.json" in plan  # the report waits for it


def test_more_than_one_gpu_trains_under_accelerate_with_the_bundled_config(tmp_path):
    plan = make("-n", "recipe", *recipe_args(tmp_path / "run", "GPUS=8", "ZERO=zero3")).stdout
    launches = [line for line in plan.splitlines() if "accelerate launch" in line]
    assert len(launches) == 2
    assert all("--config_file configs/zero3.yaml --num_processes 8" in x for x in launches)
    assert "-m instructgen.cli train --stage 1" in launches[0]
    assert "--gpus 8" in plan.split("--stage 1 --dry-run")[1].splitlines()[0] + plan


def test_pope_is_built_from_held_out_annotations_and_its_images_kept_out_of_generation(tmp_path):
    run = tmp_path / "run"
    # Any COCO annotation pair stands for the held-out set (the paper's: val2014).
    captions, instances = (
        "tests/data/coco_captions_train2017_3.json",
        ("tests/data/coco_instances_train2017_3.json"),
    )
    pope = [f"POPE_CAPTIONS={captions}", f"POPE_INSTANCES={instances}"]
    plan = make("-n", "recipe", *recipe_args(run, *pope)).stdout
    order = steps(plan)
    built = order.index("instructgen pope")  # from its own contexts, before the training ones
    assert order[built - 1] == "instructgen coco" and "instructgen coco" in order[built + 1 :]
    held_out = f"instructgen coco --captions {captions} --instances {instances}"
    assert f"{held_out} -o {run}/eval/pope/contexts.jsonl" in plan
    files = ["examples/llava-bench-qa90/qa90_questions.jsonl"] + [
        f"{run}/eval/pope/pope_{s}.jsonl" for s in ("random", "popular", "adversarial")
    ]
    assert " ".join(f"--exclude-images {f}" for f in files) in plan
    assert f"instructgen pope score --questions {run}/eval/pope" in plan
    assert f"--images /data/val2014 --model {run}/stage2" in plan  # POPE_IMAGES: EVAL_IMAGES


def test_scienceqa_runs_only_when_scienceqa_points_at_the_data(tmp_path):
    without = make("-n", "recipe", *recipe_args(tmp_path / "a")).stdout
    assert "instructgen scienceqa" not in without
    plan = make("-n", "recipe", *recipe_args(tmp_path / "b", "SCIENCEQA=/data/sqa")).stdout
    assert "instructgen scienceqa questions --problems /data/sqa/problems.json" in plan
    assert "instructgen scienceqa score" in plan


def test_recipe_without_run_or_towers_says_what_to_set():
    assert "set RUN=runs/NAME" in make("-n", "recipe").stderr
    missing = make("-n", "recipe", "RUN=runs/x", "VISION=v", "IMAGES=i").stderr
    assert "set LLM= STAGE1_IMAGES= EVAL_IMAGES= CC3M= for the recipe" in missing


def test_make_n_demo_recipe_plans_an_offline_run_with_random_towers(tmp_path):
    done = make("-n", "demo-recipe", f"RUN={tmp_path}/demo", key="sk-ignored")
    assert done.returncode == 0, done.stderr
    order = steps(done.stdout)
    assert order[:2] == ["instructgen cc3m", "instructgen coco"]
    assert "--captions examples/coco-train2017-16/captions_train2017.json" in done.stdout
    for step in ("demo_recipe.py towers", "demo_recipe.py stage1-pairs", "instructgen answer",
                 "instructgen pope", "instructgen chair"):  # fmt: skip
        assert step in order
    assert "--backend template" in done.stdout and "--journal" not in done.stdout
    assert "instructgen judge" in done.stdout and "--dry-run" in done.stdout.split("judge")[-1]
    assert "--max-steps 4" in done.stdout


def test_the_2026_demo_pair_trains_stage_2_with_the_llm_chat_template(tmp_path):
    plan = make("-n", "demo-recipe", f"RUN={tmp_path}/demo", "DEMO_PAIR=2026").stdout
    plan = plan.replace("\\\n", " ")  # one line per command
    assert f"demo_recipe.py towers {tmp_path}/demo/towers --pair 2026" in plan
    stage2 = [line for line in plan.splitlines() if "train --stage 2" in line]
    stage1 = [line for line in plan.splitlines() if "train --stage 1" in line]
    assert stage2 and all("--template chat" in line for line in stage2)
    assert stage1 and not any("--template chat" in line for line in stage1)


@pytest.mark.train
def test_demo_recipe_runs_then_does_nothing_and_a_touched_seed_reruns_generation_onward(
    tmp_path,
):
    pytest.importorskip("transformers", reason="needs the [train] extra: make install-train")
    checkout = tmp_path / "checkout"
    for part in ("Makefile", "prompts", "seeds", "examples", "configs", "tests/data"):
        copy = shutil.copytree if (ROOT / part).is_dir() else shutil.copy
        (checkout / part).parent.mkdir(parents=True, exist_ok=True)
        copy(ROOT / part, checkout / part)
    first = make("demo-recipe", cwd=checkout)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    report = checkout / "runs/demo/report.html"
    assert "random weights" in report.read_text()
    assert make("-q", "demo-recipe", cwd=checkout).returncode == 0  # up to date
    second = make("demo-recipe", cwd=checkout)
    assert second.returncode == 0 and "instructgen" not in second.stdout  # nothing ran
    seed = sorted((checkout / "seeds/detail").iterdir())[0]
    os.utime(seed)
    assert make("-q", "demo-recipe", cwd=checkout).returncode == 1
    rerun = steps(make("-n", "demo-recipe", cwd=checkout).stdout)
    assert rerun == [
        "instructgen render", "instructgen run", "instructgen build",
        "instructgen train --stage 2 --dry-run", "instructgen train --stage 2",
        "demo_recipe.py questions", "instructgen answer", "instructgen chair",
        "instructgen judge", "instructgen answer", "instructgen pope", "instructgen report",
    ]  # fmt: skip
