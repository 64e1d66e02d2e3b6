"""Fixtures every test module may use: where the real sample data lives, and a summary line
for the few tests that need more real data than the repository holds."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEST_DATA = Path(__file__).resolve().parent / "data"
SHARED_DATA = ROOT.parent / "shared" / "data"
SHARED_DATA_HINT = (
    "the full public samples (CC3M validation split, LLaVA's ScienceQA outputs) in "
    f"{SHARED_DATA}; tests/data/README.md says where each comes from"
)


@pytest.fixture(scope="session")
def test_data() -> Path:
    """The small real-data fixtures committed under tests/data/."""
    return TEST_DATA


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the project (full real samples); its tests are deselected
    when it is absent."""
    return SHARED_DATA


@pytest.fixture(scope="session")
def towers(tmp_path_factory, test_data):
    """Tiny random CLIP and Llama towers saved as folders (trainer tests; needs torch)."""
    pytest.importorskip("torch", reason="needs the [train] extra: make install-train")
    from train_tiny import build_towers

    root = tmp_path_factory.mktemp("towers")
    return build_towers(
        root, [test_data / "train_pretrain.json", test_data / "train_instruct.json"]
    )


@pytest.fixture(scope="session")
def ray_local():
    """Ray started once per test run, in local mode on 2 CPUs (skips without the [ray] extra)."""
    import logging

    ray = pytest.importorskip("ray", reason="needs the [ray] extra: make install-ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


NOT_RUN = pytest.StashKey[int]()


def pytest_collection_modifyitems(config, items) -> None:
    """Tests that read ../shared/data carry the shared_data marker; without the folder they
    are deselected (not skipped) and the summary says how to run them."""
    shared = []
    for item in items:
        if item.get_closest_marker("shared_data"):
            shared.append(item)
        elif "shared_data" in item.fixturenames:
            raise pytest.UsageError(f"{item.nodeid} reads ../shared/data: mark it shared_data")
    if shared and not SHARED_DATA.is_dir():
        config.hook.pytest_deselected(items=shared)
        items[:] = [item for item in items if item not in shared]
        config.stash[NOT_RUN] = len(shared)


def pytest_terminal_summary(terminalreporter, config) -> None:
    """Count the shared_data tests apart: how many ran and how, or why none did."""
    not_run = config.stash.get(NOT_RUN, 0)
    outcomes = {"passed": 0, "failed": 0, "skipped": 0}
    for outcome in outcomes:
        for report in terminalreporter.stats.get(outcome, []):
            if "shared_data" in getattr(report, "keywords", {}) and (
                report.when == "call" or outcome != "passed"
            ):
                outcomes[outcome] += 1
    if not (not_run or any(outcomes.values())):
        return
    terminalreporter.write_sep("-", "tests on ../shared/data (beyond the repository's samples)")
    if not_run:
        terminalreporter.write_line(f"{not_run} not run (deselected): they need {SHARED_DATA_HINT}")
    else:
        terminalreporter.write_line(
            f"{outcomes['passed']} passed, {outcomes['failed']} failed, "
            f"{outcomes['skipped']} skipped"
        )
