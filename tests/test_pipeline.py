"""The Makefile pipeline: file targets rebuilt only when an input or a setting changed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TARGET = "llava/llava_instruct.json"


def make(data: Path, *settings: str) -> list[str]:
    """Run the pipeline target; return the instructgen commands Make executed."""
    result = subprocess.run(
        [
            "make",
            "--no-print-directory",
            f"{data}/{TARGET}",
            f"DATA={data}",
            "BACKEND=template",
            "LIMIT=4",
            *settings,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return [line.split()[1] for line in result.stdout.splitlines() if "bin/instructgen " in line]


@pytest.fixture
def data(tmp_path) -> Path:
    if shutil.which("make") is None or not (ROOT / ".venv/bin/instructgen").exists():
        pytest.skip("needs make and the project's .venv (make install)")
    return tmp_path / "data"


def test_pipeline_builds_every_stage_from_the_bundled_sample(data):
    assert make(data) == ["coco", "render", "run", "build"]
    records = json.loads((data / TARGET).read_text())
    assert len(records) == 4 * 3
    stats = json.loads((data / "llava" / "stats.json").read_text())
    assert stats["invariant"]["holds"] is True
    lines = [json.loads(x) for x in (data / "responses.jsonl").read_text().splitlines()]
    assert all(x["backend"] == "template" for x in lines)


def test_second_run_does_nothing(data):
    make(data)
    assert make(data) == []


def test_changed_setting_rebuilds_only_what_depends_on_it(data):
    make(data)
    assert make(data, "MODEL=gpt-4o-mini") == ["render", "run", "build"]
    assert make(data, "MODEL=gpt-4o-mini", "SEED=1") == ["build"]


def test_switching_backend_reruns_the_run(data):
    make(data)
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    result = subprocess.run(
        [
            "make",
            "--no-print-directory",
            f"{data}/{TARGET}",
            f"DATA={data}",
            "BACKEND=openai",
            "LIMIT=4",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )  # the openai backend without a key: run starts and stops at once
    assert result.returncode != 0 and "OPENAI_API_KEY" in result.stderr
    assert make(data) == ["run", "build"]


def test_edited_seed_rebuilds_from_render(data, tmp_path):
    make(data)
    seed = ROOT / "seeds" / "detail" / "001.yaml"
    stat = seed.stat()
    try:
        seed.touch()
        assert make(data) == ["render", "run", "build"]
    finally:
        os.utime(seed, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_new_image_setting_re_renders_and_the_records_carry_the_mode(data):
    make(data)
    assert make(data, "IMAGE=url") == ["render", "run", "build"]
    records = json.loads((data / TARGET).read_text())
    assert {r["image_mode"] for r in records} == {"url"}
    assert make(data, "IMAGE=url") == []


def test_inline_images_without_an_images_folder_is_one_clear_error(data):
    result = subprocess.run(
        ["make", "--no-print-directory", f"{data}/{TARGET}", f"DATA={data}", "LIMIT=4"]
        + ["BACKEND=template", "IMAGE=inline"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "--image inline needs --images DIR" in result.stdout + result.stderr
    assert not (data / "requests.jsonl").exists()
