"""`instructgen report`: one static page of a run folder, each number traced to its file."""

from __future__ import annotations

import json
import sqlite3
from html.parser import HTMLParser
from pathlib import Path

import pytest
from report_support import make_run
from typer.testing import CliRunner

from instructgen.cli import app
from instructgen.generate.render import estimate_requests


class Figures(HTMLParser):
    """Collects every table cell that names a source (data-src), its text, and the headings."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[dict] = []
        self.headings: list[str] = []
        self.missing: list[str] = []
        self._open: dict | None = None
        self._tag: str | None = None
        self._text = ""

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "td" and "data-src" in attrs:
            self._open = {**attrs, "text": ""}
        elif tag in ("h2", "h3") or (tag == "p" and attrs.get("class") == "missing"):
            self._tag, self._text = tag, ""

    def handle_data(self, data):
        if self._open is not None:
            self._open["text"] += data
        if self._tag:
            self._text += data

    def handle_endtag(self, tag):
        if tag == "td" and self._open is not None:
            self.cells.append(self._open)
            self._open = None
        elif tag == self._tag:
            (self.missing if tag == "p" else self.headings).append(self._text.strip())
            self._tag = None


def figures(html: str) -> Figures:
    parser = Figures()
    parser.feed(html)
    return parser


def source_value(run: Path, source: str, key: str):
    """Read the value a cell names, straight from its file (independently of the report)."""
    path = run / source
    if source.endswith(".sqlite"):
        with sqlite3.connect(path) as db:
            return db.execute(key).fetchone()[0]
    if key.startswith("estimate/"):
        return getattr(estimate_requests(path).total, key.split("/", 1)[1])
    if source.endswith(".jsonl"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if key == "length":
            return len(rows)
        index, field = key.split("/")
        return rows[int(index)][field]
    obj = json.loads(path.read_text())
    for part in key.split("/"):
        obj = len(obj) if part == "length" else obj[part]
    return obj


@pytest.fixture(scope="module")
def run(tmp_path_factory, test_data) -> Path:
    return make_run(test_data, tmp_path_factory.mktemp("run") / "run-1")


@pytest.fixture(scope="module")
def page(run) -> str:
    result = CliRunner().invoke(app, ["report", str(run), "-o", str(run / "report.html")])
    assert result.exit_code == 0, result.output
    return (run / "report.html").read_text()


def test_every_number_on_the_page_matches_its_source_file(run, page):
    cells = figures(page).cells
    for cell in cells:
        value = source_value(run, cell["data-src"], cell["data-key"])
        scale = float(cell["data-scale"])
        expected = cell["data-fmt"].format(value if scale == 1 else value * scale)
        assert cell["text"] == expected, cell
    sources = {cell["data-src"] for cell in cells}
    assert sources >= {
        "data/llava/stats.json", "eval/chair.json", "data/requests.jsonl",
        "data/journal.sqlite", "stage1/train_log.jsonl", "stage1/plan.json",
        "stage2/train_log.jsonl", "stage2/plan.json", "eval/judge/summary.json",
        "eval/judge/requests.jsonl", "eval/pope/result.json", "eval/scienceqa/result.json",
        "eval/answers.jsonl",
    }  # fmt: skip


def test_known_figures_appear_as_their_files_give_them(page):
    cells = {(c["data-src"], c["data-key"]): c["text"] for c in figures(page).cells}
    # The build fixtures: 18 requests, 9 records (test_build.py says which and why).
    assert cells[("data/llava/stats.json", "records/total")] == "9"
    assert cells[("data/llava/stats.json", "quarantined/failed_request")] == "2"
    assert cells[("eval/pope/result.json", "splits/random/f1")] == "86.4"  # 2PR/(P+R) of .9, .83
    assert cells[("eval/pope/result.json", "splits/adversarial/yes_ratio")] == "51.9"
    assert cells[("eval/judge/summary.json", "detail/relative")] == "70.4"
    assert cells[("eval/scienceqa/result.json", "breakdown/Avg")] == "88.64"
    assert cells[("eval/chair.json", "by_task/detail/chair_s")] == "100.0%"
    assert cells[("data/llava/stats.json", "chair/overall/records")] == "9"
    spent = "SELECT coalesce(sum(cost_usd), 0) FROM requests WHERE line IS NOT NULL"
    assert cells[("data/journal.sqlite", spent)].startswith("$")
    assert cells[("stage2/train_log.jsonl", "6/step")] == "7"
    assert cells[("stage2/checkpoint-4/trainer_state.json", "schedule/records")] == "158,000"
    assert ("stage2/checkpoint-2/trainer_state.json", "schedule/records") not in cells


def test_every_section_shows_for_a_complete_run(page):
    found = figures(page)
    sections = ["Data", "Cost", "Training", "Evaluation", "Settings"]
    assert [h for h in found.headings if h in sections] == sections
    assert found.missing == []
    assert page.count("<svg") == 3  # loss and lr of each stage (one figure each), the judge's
    for title in ("Records per task", "Quarantine reasons", "Image mode", "Hallucination (CHAIR",
                  "Estimated", "Spent", "Stage 1: the plan", "LLaVA-Bench (COCO)", "POPE",
                  "ScienceQA accuracy", "Models, prompts and seeds"):  # fmt: skip
        assert any(h.startswith(title) for h in found.headings), title


def test_published_figures_are_labelled_as_published(page):
    assert "LLaVA (published)" in page  # LLaVA-Bench and ScienceQA rows
    assert "LLaVA+GPT-4 judge (published)" in page
    assert "LLaVA-1.5-7B F1, average of the splits (published): 85.9" in page
    assert "not measured here" in page


def test_an_empty_run_folder_renders_and_every_section_says_what_is_missing(tmp_path):
    (tmp_path / "run").mkdir()
    result = CliRunner().invoke(app, ["report", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    found = figures((tmp_path / "run" / "report.html").read_text())
    assert found.cells == []
    assert len(found.missing) == 5  # one line per section
    assert "data/llava/stats.json" in found.missing[0]
    assert "eval/pope/result.json" in found.missing[3]


def test_a_random_weight_run_says_so_on_every_model_figure(tmp_path, test_data):
    run = make_run(test_data, tmp_path / "run", random_weights=True)
    CliRunner().invoke(app, ["report", str(run)])
    html = (run / "report.html").read_text()
    assert 'id="random-weights"' in html
    # the banner, each stage's last-step note and plot title, the evaluation section, settings
    assert html.count("model with random weights") >= 5


def test_the_prompts_hash_covers_system_prompt_and_seeds(run, page):
    from instructgen.report.sources import prompt_hashes

    requests = [json.loads(line) for line in (run / "data/requests.jsonl").read_text().splitlines()]
    hashes = prompt_hashes(requests)
    assert set(hashes) == {"conversation", "detail", "complex_reasoning"}
    assert all(h in page for h in hashes.values())
    requests[0]["body"]["messages"][1]["content"] += " changed seed"
    assert prompt_hashes(requests)["conversation"] != hashes["conversation"]


def test_a_missing_run_folder_is_one_red_line(tmp_path):
    result = CliRunner().invoke(app, ["report", str(tmp_path / "nope")])
    assert result.exit_code != 0
    assert "no such run folder" in str(result.exception or result.output)


def test_a_malformed_file_is_one_red_line_naming_it(tmp_path, test_data):
    run = make_run(test_data, tmp_path / "run")
    (run / "eval/pope/result.json").write_text('{"splits": ')
    from instructgen.errors import InputError

    result = CliRunner().invoke(app, ["report", str(run)])
    assert isinstance(result.exception, InputError)
    assert "eval/pope/result.json:1" in str(result.exception)
    assert not (run / "report.html").exists()  # nothing half-written


def test_a_cut_short_last_line_of_the_train_log_is_left_out_with_a_note(tmp_path, test_data):
    """A crash mid-write, or a report made while training: the lines before it are shown."""
    run = make_run(test_data, tmp_path / "run")
    with open(run / "stage2/train_log.jsonl", "a") as f:
        f.write('{"step": 8, "epoch": 1.1, "lo')
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    html = (run / "report.html").read_text()
    assert "stage2/train_log.jsonl: line 8 is cut short" in html
    cells = {(c["data-src"], c["data-key"]): c["text"] for c in figures(html).cells}
    assert cells[("stage2/train_log.jsonl", "6/step")] == "7"


@pytest.mark.parametrize(
    ("rel", "content"),
    [
        ("data/llava/stats.json", "[1, 2]"),
        ("stage1/plan.json", '"a plan"'),
        ("eval/judge/summary.json", '{"all": 5}'),
        ("data/llava/llava_instruct.json", '{"id": 1}'),
        ("eval/pope/result.json", '{"splits": {"random": {"n": "many"}}}'),
        ("stage1/train_log.jsonl", '{"step": 1}\n[1, 2]\n{"step": 3}\n'),
    ],
)
def test_a_wrongly_shaped_file_is_one_red_line_naming_it(tmp_path, test_data, rel, content):
    from instructgen.errors import InputError

    run = make_run(test_data, tmp_path / "run")
    (run / "eval/questions.jsonl").write_text(json.dumps({"question_id": 1, "image": "a.jpg"}))
    (run / rel).write_text(content)
    result = CliRunner().invoke(app, ["report", str(run)])
    assert isinstance(result.exception, InputError), result.exception
    assert rel in str(result.exception)
    assert not (run / "report.html").exists()


def test_settings_name_the_model_that_answered_beside_the_one_requested(tmp_path, test_data):
    run = make_run(test_data, tmp_path / "run")
    CliRunner().invoke(app, ["report", str(run)])
    html = (run / "report.html").read_text()
    assert "<td>teacher model(s) requested (requests.jsonl)</td><td>gpt-4o</td>" in html
    assert "gpt-4o-2024-08-06 (18 responses)</td>" in html  # a dated snapshot of gpt-4o
    stats = json.loads((run / "data/llava/stats.json").read_text())
    (run / "data/llava/stats.json").write_text(
        json.dumps({**stats, "models": {"template-baseline": 18}})
    )  # what a template-backend build counts
    CliRunner().invoke(app, ["report", str(run)])
    html = (run / "report.html").read_text()
    assert (
        "<td>teacher model(s) that answered (stats.json)</td><td>template-baseline "
        "(18 responses); template-baseline is not a model requested (the template backend)"
    ) in html


def test_the_plan_beside_what_was_used_shows_family_projector_and_feature_layer(run, page):
    plan = json.loads((run / "stage2/plan.json").read_text())
    used = json.loads((run / "stage2/instructgen_train.json").read_text())
    for name in ("vision_family", "projector"):
        assert f"<td>{name}</td><td>{plan[name]}</td><td>{used[name]}</td>" in page
    cells = [
        c
        for c in figures(page).cells
        if c["data-key"] == "feature_layer" and "stage2" in c["data-src"]
    ]
    assert {(c["data-src"], c["text"]) for c in cells} == {
        ("stage2/plan.json", "-2"), ("stage2/instructgen_train.json", "-2"),
    }  # fmt: skip
    assert all(c["class"] == "n" for c in cells)  # right-aligned, as every number is


def test_numbers_written_as_plain_text_are_right_aligned_too(page):
    assert '<td class="n">83.1</td>' in page  # LLaVA-Bench published, conv
    assert "<td>83.1</td>" not in page
