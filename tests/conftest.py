"""Fixtures every test module may use: where the real sample data lives."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEST_DATA = Path(__file__).resolve().parent / "data"
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def test_data() -> Path:
    """The small real-data fixtures committed under tests/data/."""
    return TEST_DATA


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the project (larger real samples); skips when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not found (shared data sits beside the project)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def towers(tmp_path_factory, test_data):
    """Tiny random CLIP and Llama towers saved as folders (trainer tests; needs torch)."""
    pytest.importorskip("torch")
    from train_tiny import build_towers

    root = tmp_path_factory.mktemp("towers")
    return build_towers(
        root, [test_data / "train_pretrain.json", test_data / "train_instruct.json"]
    )


@pytest.fixture(scope="session")
def ray_local():
    """Ray started once per test run, in local mode on 2 CPUs (skips without the [ray] extra)."""
    import logging

    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()
