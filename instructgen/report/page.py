"""The report page: five sections (data, cost, training, evaluation, settings) built from a
run folder's files, rendered by `templates/report.html.j2` into one self-contained HTML file.

Every number on the page is a `Number` that names its source file and where in it the value
sits (`data-src`, `data-key` in the HTML), so a reader, or a test, can check it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from instructgen.errors import InputError
from instructgen.eval.pope import PUBLISHED as POPE_PUBLISHED
from instructgen.files import atomic_writer
from instructgen.report import plots
from instructgen.report import sources as src
from instructgen.report.sources import RunFolder, lookup
from instructgen.scienceqa.problems import GROUPS as SQA_GROUPS
from instructgen.scienceqa.problems import PUBLISHED as SQA_PUBLISHED

# Liu et al., "Visual Instruction Tuning" (NeurIPS 2023), Table 4: LLaVA-Bench (COCO),
# relative score to text-only GPT-4, LLaVA trained on the full instruction data.
LLAVA_BENCH_PUBLISHED = {"conv": 83.1, "detail": 75.3, "complex": 96.5, "all": 85.1}
POPE_SPLITS = ("random", "popular", "adversarial")
POPE_METRICS = ("accuracy", "precision", "recall", "f1", "yes_ratio")
# A plain-text cell that is a number ("0", "85.9", "-2") or no number ("-"): right-aligned.
NUMERIC_TEXT = re.compile(r"-|[-+]?[\d,]*\.?\d+%?")
RANDOM_WEIGHTS_LABEL = "random weights: these figures come from a model with random weights"


@dataclass(frozen=True)
class Number:
    """A figure shown on the page and where it comes from.

    `key`: a `/` path into a JSON file, `row/field` for JSON Lines, SQL for a journal, or
    `estimate/<field>` for the cost estimate of a requests file. Shown as fmt(value x scale).
    """

    value: float | int | None
    source: str
    key: str
    fmt: str = "{:,}"
    scale: float = 1.0

    @property
    def text(self) -> str:
        if self.value is None:
            return "-"
        try:
            return self.fmt.format(self.value if self.scale == 1 else self.value * self.scale)
        except (TypeError, ValueError):
            raise InputError(
                f"{self.source}: {self.key} is {self.value!r}, not a number as the step that "
                "writes it makes; rewrite it with that step"
            ) from None


Cell = str | Number


@dataclass(frozen=True)
class Table:
    title: str
    columns: list[str]
    rows: list[list[Cell]]
    note: str = ""


@dataclass(frozen=True)
class Plot:
    svg: str  # inline SVG markup made by `plots`


@dataclass
class Section:
    """One part of the page; `missing` lists the files it needed and did not find.
    `blocks` are its tables and plots in page order."""

    anchor: str
    title: str
    reads: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    blocks: list[Table | Plot] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.blocks

    def need(self, run: RunFolder, rel: str) -> bool:
        """Whether `rel` is there; noted as missing when not."""
        if rel not in self.reads:
            self.reads.append(rel)
        if run.has(rel):
            return True
        self.missing.append(rel)
        return False


def _json_number(doc: dict, rel: str, key: str, fmt: str = "{:,}", scale: float = 1.0) -> Number:
    try:
        value = lookup(doc, key)
    except (KeyError, IndexError, TypeError):
        value = None
    return Number(value, rel, key, fmt, scale)


def data_section(run: RunFolder) -> Section:
    s = Section("data", "Data")
    if not s.need(run, src.STATS):
        return s
    stats = run.json(src.STATS)

    def num(key: str, fmt: str = "{:,}") -> Number:
        return _json_number(stats, src.STATS, key, fmt)

    per_task = stats.get("quarantined_per_task", {})

    def quarantined(task: str) -> Cell:
        if task == "total":
            return num("quarantined/total")
        return num(f"quarantined_per_task/{task}") if task in per_task else "0"

    rows = [[t, num(f"records/{t}"), quarantined(t)] for t in stats.get("records", {})]
    s.blocks.append(Table("Records per task", ["task", "records", "quarantined"], rows))
    s.blocks.append(
        Table(
            "Quarantine reasons",
            ["reason", "requests"],
            [[r, num(f"quarantined/{r}")] for r in stats.get("quarantined", {})],
        ),
    )
    s.blocks.append(
        Table(
            "Flags (records kept, marked for review)",
            ["flag", "records"],
            [[f, num(f"flags/{f}")] for f in stats.get("flags", {})] or [["none", "0"]],
        ),
    )
    modes = stats.get("records_per_image_mode", {})
    s.blocks.append(
        Table(
            "Image mode (what the teacher saw)",
            ["mode", "records"],
            [[m, num(f"records_per_image_mode/{m}")] for m in modes],
        ),
    )
    s.blocks.append(
        Table(
            "Teacher models",
            ["model", "responses"],
            [[m, num(f"models/{m}")] for m in stats.get("models", {})],
        ),
    )
    _chair(run, s, stats)
    return s


def _chair(run: RunFolder, s: Section, stats: dict) -> None:
    """CHAIR of the data: the build's stats.json (key `chair`), else `chair` run on the build."""
    if "chair" in stats:
        s.blocks.append(chair_table(stats, src.STATS, "chair/", "of the training data"))
    elif s.need(run, src.CHAIR):
        s.blocks.append(chair_table(run.json(src.CHAIR), src.CHAIR, "", "of the training data"))
    else:
        s.notes.append("Hallucination (CHAIR) of the data: not measured for this run.")


def chair_table(doc: dict, rel: str, base: str, what: str) -> Table:
    """CHAIR_i, CHAIR_s and recall (percent) overall and per group of a chair.json figure set."""
    groups = ["overall"] + [f"by_task/{t}" for t in lookup(doc, f"{base}by_task")]
    rows = [
        [g.removeprefix("by_task/")]
        + [
            _json_number(doc, rel, f"{base}{g}/{m}", "{:.1f}%", 100)
            for m in ("chair_i", "chair_s", "recall")
        ]
        + [
            _json_number(doc, rel, f"{base}{g}/{m}")
            for m in ("mentions", "hallucinated", "records")
        ]
        for g in groups
    ]
    return Table(
        f"Hallucination (CHAIR, Rohrbach et al. 2018) {what}",
        ["group", "CHAIR_i", "CHAIR_s", "recall", "mentions", "hallucinated", "records"],
        rows,
        "CHAIR_i: hallucinated / all object mentions; CHAIR_s: records with one or more; "
        "recall: true objects mentioned / true objects. '-': no object mentioned.",
    )


def _estimate_rows(run: RunFolder, rel: str, what: str) -> list[list[Cell]]:
    from instructgen.generate.render import estimate_requests

    est = estimate_requests(run.open(rel)).total
    cells = [
        Number(getattr(est, f), rel, f"estimate/{f}", fmt)
        for f, fmt in (
            ("requests", "{:,}"),
            ("prompt_tokens", "{:,}"),
            ("completion_tokens", "{:,}"),
            ("cost_standard", "${:,.2f}"),
            ("cost_batch", "${:,.2f}"),
        )
    ]
    return [[what, *cells]]


def _spent_rows(run: RunFolder, rel: str, what: str) -> list[list[Cell]]:
    cells = [
        Number(run.query(rel, src.SPENT_SQL[k]), rel, src.SPENT_SQL[k], fmt)
        for k, fmt in (
            ("requests", "{:,}"),
            ("done", "{:,}"),
            ("failed", "{:,}"),
            ("prompt_tokens", "{:,}"),
            ("completion_tokens", "{:,}"),
            ("cost_usd", "${:,.2f}"),
        )
    ]
    return [[what, *cells]]


def cost_section(run: RunFolder) -> Section:
    s = Section("cost", "Cost")
    estimated, spent = [], []
    for requests, journal, what in (
        (src.REQUESTS, src.JOURNAL, "generation"),
        (src.JUDGE_REQUESTS, src.JUDGE_JOURNAL, "judge"),
    ):
        if s.need(run, requests):
            estimated += _estimate_rows(run, requests, what)
        if s.need(run, journal):
            spent += _spent_rows(run, journal, what)
        else:
            s.notes.append(
                f"{what}: no {journal}, so nothing was sent to an API for it (the template "
                "backend, or a judge dry run): spent $0."
            )
    if estimated:
        s.blocks.append(
            Table(
                "Estimated (before sending: `instructgen estimate`)",
                [
                    "step",
                    "requests",
                    "prompt tokens",
                    "completion tokens (expected)",
                    "standard $",
                    "Batch API $",
                ],
                estimated,
                "Prices of each request's model as listed by its provider; the template "
                "backend itself costs nothing, this is what the same requests would cost.",
            ),
        )
    if spent:
        s.blocks.append(
            Table(
                "Spent (the client's journal)",
                [
                    "step",
                    "requests",
                    "done",
                    "failed",
                    "prompt tokens",
                    "completion tokens",
                    "cost",
                ],
                spent,
            ),
        )
    return s


# (row name, key in plan.json, key in a checkpoint's trainer_state.json or None, format)
PLAN_ROWS = (
    ("records", "records", "schedule/records", "{:,}"),
    ("epochs", "epochs", None, "{:g}"),
    ("optimizer steps", "steps", "schedule/steps", "{:,}"),
    ("global batch", "global_batch", "schedule/global_batch", "{:,}"),
    ("micro batch", "micro_batch", "schedule/micro_batch", "{:,}"),
    ("GPUs", "gpus", "schedule/devices", "{:,}"),
    ("precision", "precision", None, "{}"),
    ("max length", "max_length", None, "{:,}"),
    ("mean tokens per sequence", "mean_tokens", None, "{:,.1f}"),
    ("image tokens per sample", "image_tokens_per_sample", None, "{:g}"),
    ("trainable parameters", "params/trainable", None, "{:,}"),
    ("total parameters", "params/total", None, "{:,}"),
    ("memory per GPU, ZeRO-0 (GiB)", "memory_gb/zero0/total", None, "{:,.2f}"),
    ("hours (with --gpu-tflops, --mfu)", "hours", None, "{:,.3g}"),
)


def training_section(run: RunFolder, label: str) -> Section:
    s = Section("training", "Training")
    for stage, folder in src.STAGES.items():
        log_rel, plan_rel, meta_rel = (
            f"{folder}/{src.TRAIN_LOG}",
            f"{folder}/{src.PLAN}",
            f"{folder}/{src.TRAINED_WITH}",
        )
        has_log, has_plan, has_meta = (s.need(run, r) for r in (log_rel, plan_rel, meta_rel))
        log, cut = run.log(log_rel) if has_log else ([], None)
        if cut is not None:
            s.notes.append(
                f"{log_rel}: line {cut} is cut short (a crash mid-write, or training still "
                "running) and is left out."
            )
        if log:
            s.blocks.append(_last_step(stage, log, log_rel, label))
            s.blocks.append(Plot(plots.training_curves(f"stage {stage}", log, label)))
        if has_plan or has_meta:
            state_rel = run.newest_checkpoint_state(folder)
            if state_rel:
                s.reads.append(state_rel)
            s.blocks.append(
                _plan_beside_used(stage, run, plan_rel, meta_rel, state_rel, log, log_rel)
            )
    return s


def _plan_beside_used(
    stage: int, run: RunFolder, plan_rel: str, meta_rel: str, state_rel: str | None,
    log: list[dict], log_rel: str,
) -> Table:  # fmt: skip
    """plan.json's figures beside the run's: its checkpoint's schedule, its log, its settings."""
    plan = run.json(plan_rel) or {}
    meta = run.json(meta_rel) or {}
    state = run.json(state_rel) if state_rel else None
    rows: list[list[Cell]] = []
    for name, key, used_key, fmt in PLAN_ROWS:
        planned: Cell = _json_number(plan, plan_rel, key, fmt) if plan else "-"
        used: Cell = "-"
        if key == "steps" and log:
            used = Number(log[-1].get("step"), log_rel, f"{len(log) - 1}/step")
        elif used_key and state:
            used = _json_number(state, state_rel, used_key, fmt)
        rows.append([name, planned, used])
    for name in ("vision", "llm", "vision_family", "template", "projector"):
        rows.append([name, str(plan.get(name, "-")), str(meta.get(name, "-"))])
    rows.append(
        [
            "feature layer",
            _json_number(plan, plan_rel, "feature_layer", "{}") if plan else "-",
            _json_number(meta, meta_rel, "feature_layer", "{}") if meta else "-",
        ]
    )
    used_from = ", ".join(r for r in (meta_rel, log_rel, state_rel) if r)
    return Table(
        f"Stage {stage}: the plan (`train --dry-run`) beside what was used",
        ["", f"planned ({plan_rel})", f"used ({used_from})"],
        rows,
        "The plan is for the GPUs it names; a run on CPU uses fp32. The schedule used comes "
        "from the newest checkpoint the run kept, when there is one.",
    )


def _last_step(stage: int, log: list[dict], rel: str, label: str) -> Table:
    last = len(log) - 1
    cells = [
        Number(log[last].get(field), rel, f"{last}/{field}", fmt)
        for field, fmt in (
            ("step", "{:,}"),
            ("epoch", "{:g}"),
            ("loss", "{:.4f}"),
            ("lr", "{:.2e}"),
            ("tokens_per_s", "{:,.1f}"),
        )
    ]
    return Table(
        f"Stage {stage}: last logged step",
        ["step", "epoch", "loss", "lr", "tokens/s"],
        [cells],
        label,
    )


def evaluation_section(run: RunFolder, label: str) -> Section:
    s = Section("evaluation", "Evaluation")
    if label:
        s.notes.append(label)
    _answers(run, s)
    if s.need(run, src.ANSWERS_CHAIR):
        chair = run.json(src.ANSWERS_CHAIR)
        s.blocks.append(chair_table(chair, src.ANSWERS_CHAIR, "", "of the model's answers"))
    _judge(run, s)
    _pope(run, s)
    _scienceqa(run, s)
    return s


def _overlap(run: RunFolder, s: Section, questions_rel: str, what: str) -> None:
    """Say how many of an evaluation's images the training data holds (any COCO spelling)."""
    from instructgen.generate.exclude import image_key

    if not (run.has(questions_rel) and run.has(src.INSTRUCT)):
        return
    asked = {image_key(q["image"]) for q in run.jsonl(questions_rel) if q.get("image")}
    trained = {image_key(r["image"]) for r in run.json(src.INSTRUCT, list) if r.get("image")}
    shared = len(asked & trained)
    if src.INSTRUCT not in s.reads:
        s.reads.append(src.INSTRUCT)
    if shared:
        s.notes.append(
            f"{what}: {shared} of its {len(asked)} images are in the training data "
            f"({src.INSTRUCT}): these figures are not on held-out images."
        )


def _answers(run: RunFolder, s: Section) -> None:
    """How many questions the model answered, per category (from answers.jsonl)."""
    if not s.need(run, src.ANSWERS):
        return
    answers = run.jsonl(src.ANSWERS)
    _overlap(run, s, src.QUESTIONS, "LLaVA-Bench-style questions")
    questions = {q["question_id"]: q for q in run.jsonl(src.QUESTIONS) or []}
    if questions:
        s.reads.append(src.QUESTIONS)
    per_category: dict[str, int] = {}
    for a in answers:
        category = questions.get(a["question_id"], {}).get("category", "all")
        per_category[category] = per_category.get(category, 0) + 1
    models = ", ".join(sorted({str(a.get("model_id")) for a in answers}))
    rows: list[list[Cell]] = [[c, str(n)] for c, n in per_category.items()]
    rows.append(["answers", Number(len(answers), src.ANSWERS, "length")])
    s.blocks.append(Table(f"Answers of {models} ({src.ANSWERS})", ["category", "answers"], rows))


def _judge(run: RunFolder, s: Section) -> None:
    if not s.need(run, src.JUDGE_SUMMARY):
        s.notes.append(
            "LLaVA-Bench (COCO) judge: no summary.json (without a key the judge runs dry: its "
            "requests and estimated cost are under Cost)."
        )
        return
    summary = run.json(src.JUDGE_SUMMARY)
    cats = [k for k, v in summary.items() if isinstance(v, dict) and "relative" in v]
    cats = [c for c in cats if c != "all"] + ["all"]
    rows = [
        [
            c,
            _json_number(summary, src.JUDGE_SUMMARY, f"{c}/relative", "{:.1f}"),
            _json_number(summary, src.JUDGE_SUMMARY, f"{c}/n"),
            _json_number(summary, src.JUDGE_SUMMARY, f"{c}/unparsed"),
            "-" if c not in LLAVA_BENCH_PUBLISHED else f"{LLAVA_BENCH_PUBLISHED[c]:.1f}",
        ]
        for c in cats
    ]
    judge = summary.get("judge", {})
    s.blocks.append(
        Table(
            f"LLaVA-Bench (COCO): relative score per category (judge {judge.get('model', '?')})",
            ["category", "relative score", "questions", "unparsed", "LLaVA (published)"],
            rows,
            "Published: Liu et al. 2023, Table 4 (full data), not measured here.",
        ),
    )
    s.blocks.append(
        Plot(
            plots.bars_beside_published(
                "LLaVA-Bench (COCO) relative score",
                cats,
                [summary[c]["relative"] for c in cats],
                [LLAVA_BENCH_PUBLISHED.get(c) for c in cats],
                "this run",
                "LLaVA (published)",
                "relative score (%)",
            )
        )
    )


def _pope(run: RunFolder, s: Section) -> None:
    if not s.need(run, src.POPE_RESULT):
        return
    _overlap(run, s, src.POPE_QUESTIONS, "POPE")
    result = run.json(src.POPE_RESULT)
    rel = src.POPE_RESULT
    rows: list[list[Cell]] = []
    for split in [p for p in POPE_SPLITS if p in result.get("splits", {})]:
        rows.append(
            [split, _json_number(result, rel, f"splits/{split}/n")]
            + [
                _json_number(result, rel, f"splits/{split}/{m}", "{:.1f}", 100)
                for m in POPE_METRICS
            ]
            + [_json_number(result, rel, f"splits/{split}/missing")]
        )
    if "average" in result:
        rows.append(
            ["average", "-"]
            + [_json_number(result, rel, f"average/{m}", "{:.1f}", 100) for m in POPE_METRICS]
            + [Number(len(result.get("missing", [])), rel, "missing/length")]
        )
    published = result.get("published") or POPE_PUBLISHED
    s.blocks.append(
        Table(
            "POPE (Li et al. 2023): yes/no object questions, percent",
            ["split", "questions", "accuracy", "precision", "recall", "F1", "yes ratio", "missing"],
            rows,
            "Published, not measured here: " + "; ".join(f"{k}: {v}" for k, v in published.items()),
        ),
    )


def _scienceqa(run: RunFolder, s: Section) -> None:
    if not s.need(run, src.SCIENCEQA_RESULT):
        s.notes.append(
            "ScienceQA: not run (the recipe runs it when SCIENCEQA= points at the data)."
        )
        return
    result = run.json(src.SCIENCEQA_RESULT)
    rel = src.SCIENCEQA_RESULT
    rows: list[list[Cell]] = [
        ["this run"] + [_json_number(result, rel, f"breakdown/{g}", "{:.2f}") for g in SQA_GROUPS]
    ]
    rows += [[name] + [f"{v:.2f}" for v in values] for name, values in SQA_PUBLISHED.items()]
    s.blocks.append(
        Table(
            "ScienceQA accuracy (%), the paper's breakdown",
            ["", *SQA_GROUPS],
            rows,
            "Published rows: Liu et al. 2023, test split, not measured here.",
        ),
    )


def settings_section(run: RunFolder) -> Section:
    s = Section("settings", "Settings")
    rows: list[list[Cell]] = []
    requests = run.jsonl(src.REQUESTS) if s.need(run, src.REQUESTS) else None
    stats = run.json(src.STATS) if s.need(run, src.STATS) else None
    requested = sorted({str(r.get("body", {}).get("model")) for r in requests or []})
    if requests is not None:
        rows.append(["teacher model(s) requested (requests.jsonl)", ", ".join(requested)])
    answered, where = _answered_by(run, s, stats)
    if answered:
        shown = ", ".join(f"{m} ({n:,} responses)" for m, n in answered.items())
        # An API answers as a dated snapshot of the model asked for (gpt-4o-2024-08-06).
        others = [m for m in answered if not any(m.startswith(r) for r in requested)]
        if requested and others:
            shown += f"; {', '.join(others)} is not a model requested (the template backend)"
        rows.append([f"teacher model(s) that answered ({where})", shown])
    for task, digest in src.prompt_hashes(requests or []).items():
        rows.append([f"prompts/seeds hash, {task} (sha256 of system + seeds)", digest])
    if stats:
        rows.append(["build seed (stats.json)", _json_number(stats, src.STATS, "inputs/seed")])
    for stage, folder in src.STAGES.items():
        rel = f"{folder}/{src.TRAINED_WITH}"
        if s.need(run, rel):
            meta = run.json(rel)
            rows.append([f"stage {stage} towers", f"{meta.get('vision')} + {meta.get('llm')}"])
        state = run.newest_checkpoint_state(folder)
        if state:
            seed = _json_number(run.json(state), state, "schedule/seed")
            rows.append([f"stage {stage} seed (init and data order)", seed])
    if run.has(src.RANDOM_WEIGHTS):
        s.reads.append(src.RANDOM_WEIGHTS)
        rows.append(
            ["weights", "RANDOM (tiny towers built from configs; no model figure means anything)"]
        )
    for step, line in run.settings().items():
        rows.append([f"make recipe: {step}", line or "(defaults)"])
    s.reads.append(f"{src.SETTINGS_DIR}/")
    s.blocks.append(Table("Models, prompts and seeds", ["setting", "value"], rows))
    return s


def _answered_by(run: RunFolder, s: Section, stats: dict | None) -> tuple[dict[str, int], str]:
    """Responses per model that answered: the build's count (stats.json `models`), else the
    `model` of each line of responses.jsonl; ({}, "") when neither is there."""
    if stats and isinstance(stats.get("models"), dict):
        return stats["models"], "stats.json"
    if not run.has(src.RESPONSES):
        return {}, ""
    s.reads.append(src.RESPONSES)
    counts: dict[str, int] = {}
    for line in run.jsonl(src.RESPONSES):
        model = str(((line.get("response") or {}).get("body") or {}).get("model"))
        counts[model] = counts.get(model, 0) + 1
    return counts, "responses.jsonl"


def build_sections(run_dir: Path) -> list[Section]:
    """The page's sections, each with the files it read and those it missed."""
    run = RunFolder(Path(run_dir))
    label = RANDOM_WEIGHTS_LABEL if run.has(src.RANDOM_WEIGHTS) else ""
    builders = [
        lambda: data_section(run),
        lambda: cost_section(run),
        lambda: training_section(run, label),
        lambda: evaluation_section(run, label),
        lambda: settings_section(run),
    ]
    return [_read_or_explain(run, build) for build in builders]


def _read_or_explain(run: RunFolder, build) -> Section:
    """A section, or an InputError naming the file whose content has another shape than
    the one its step writes (a list where an object belongs, a string for a number)."""
    try:
        return build()
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as e:
        rel = run.opened[-1] if run.opened else "?"
        raise InputError(
            f"{run.path(rel)}: unexpected content ({type(e).__name__}: {e}); rewrite it with "
            "the step that makes it"
        ) from None


def render_page(run_dir: Path, sections: list[Section]) -> str:
    """The sections as one self-contained HTML document (styles and SVG plots inline)."""
    env = Environment(
        loader=PackageLoader("instructgen.report", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
    )
    env.tests["figure"] = lambda cell: isinstance(cell, Number)
    env.tests["numeric"] = lambda cell: bool(NUMERIC_TEXT.fullmatch(str(cell)))
    env.tests["plot"] = lambda block: isinstance(block, Plot)
    random_weights = RunFolder(Path(run_dir)).has(src.RANDOM_WEIGHTS)
    return env.get_template("report.html.j2").render(
        run_name=Path(run_dir).resolve().name,
        sections=sections,
        random_weights=RANDOM_WEIGHTS_LABEL if random_weights else "",
    )


def write_report(run_dir: Path, output: Path) -> list[Section]:
    """Write the report of `run_dir` to `output` atomically; returns its sections."""
    sections = build_sections(run_dir)
    html = render_page(run_dir, sections)
    with atomic_writer(output) as f:
        f.write(html)
    return sections
