"""The review store: import, filters, paging, decisions, edits, rescue, summary, export."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3

import pytest
from review_support import copy_sources, imported

from instructgen.errors import InputError
from instructgen.review import queries, store
from instructgen.review.queries import Filters
from instructgen.review.rescue import RescueError, rescue_draft, turns_from_text


@pytest.fixture
def sources(tmp_path, test_data) -> store.Sources:
    return copy_sources(test_data, tmp_path)


@pytest.fixture
def conn(tmp_path, sources) -> sqlite3.Connection:
    conn = imported(tmp_path / "review.sqlite", sources)
    yield conn
    conn.close()


def keys(page: queries.Page) -> list[str]:
    return [r.key for r in page.rows]


def test_import_loads_records_quarantined_responses_and_contexts(conn):
    report = store._report(conn, imported=True)
    assert (report.records, report.quarantined, report.contexts) == (10, 2, 4)
    assert report.without_context == 0


def test_the_store_is_in_wal_mode(conn):
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_reopening_unchanged_sources_does_not_import_again(tmp_path, sources, conn):
    again = store.open_store(tmp_path / "review.sqlite")
    assert store.import_sources(again, sources).imported is False


def test_decisions_survive_a_restart(tmp_path, sources, conn):
    store.decide(conn, "coco-183872-detail", "accepted")
    conn.close()
    reopened = imported(tmp_path / "review.sqlite", sources)
    assert store.get_record(reopened, "coco-183872-detail").status == "accepted"


def test_a_changed_source_is_reimported_and_keeps_decisions_and_edits(conn, sources):
    store.decide(conn, "coco-30752-detail", "rejected", "hallucination")
    store.edit_turn(conn, "coco-30752-detail", 1, "A skier and a dog cross a snowy field.")
    records = json.loads(sources.records.read_text())
    sources.records.write_text(json.dumps(records[:8]))
    report = store.import_sources(conn, sources)
    assert report.imported and report.records == 8
    view = store.get_record(conn, "coco-30752-detail")
    assert (view.status, view.reject_reason) == ("rejected", "hallucination")
    assert view.turns[1].value == "A skier and a dog cross a snowy field."


def test_decisions_on_records_gone_from_the_source_are_kept_and_counted(conn, sources):
    store.decide(conn, "coco-419474-complex_reasoning", "accepted")
    records = json.loads(sources.records.read_text())
    sources.records.write_text(json.dumps(records[:-1]))
    assert store.import_sources(conn, sources).orphan_decisions == 1


def test_the_source_files_are_never_modified(conn, sources):
    def digest():
        return [
            hashlib.sha256(p.read_bytes()).hexdigest()
            for p in (sources.records, sources.quarantine)
        ]

    before = digest()
    store.decide(conn, "coco-183872-detail", "accepted")
    store.edit_turn(conn, "coco-183872-detail", 1, "Edited.")
    store.rescue(conn, "coco-419474-detail", "Question: Describe it.\nAnswer: A kite.")
    assert digest() == before


def test_records_without_custom_id_keep_their_review_when_one_is_inserted_before_them(
    conn, sources
):
    # LLaVA's public llava_instruct_150k.json has no custom_id: only id and conversations
    records = [
        {k: v for k, v in r.items() if k not in ("custom_id", "task")}
        for r in json.loads(sources.records.read_text())
    ]
    sources.records.write_text(json.dumps(records))
    store.import_sources(conn, sources)
    key = conn.execute("SELECT key FROM records WHERE seq = 5").fetchone()[0]
    store.decide(conn, key, "rejected", "hallucination")
    store.edit_turn(conn, key, 1, "Two pairs of scissors.")
    newcomer = records[0] | {"conversations": records[1]["conversations"][::-1]}
    sources.records.write_text(json.dumps([newcomer, *records]))
    store.import_sources(conn, sources)
    view = store.get_record(conn, key)
    assert (view.seq, view.status, view.turns[1].value) == (6, "rejected", "Two pairs of scissors.")
    assert queries.count(conn, queries.Filters(status="rejected")) == 1


def test_a_duplicate_quarantined_response_keeps_its_rescue_when_lines_move(conn, sources):
    def duplicate(raw: str) -> str:
        return json.dumps({"custom_id": "coco-183872-detail", "reason": "duplicate", "raw": raw})

    lines = sources.quarantine.read_text().splitlines()
    sources.quarantine.write_text("\n".join([*lines, duplicate("A dog."), duplicate("A cat.")]))
    store.import_sources(conn, sources)
    cat = conn.execute("SELECT key FROM records WHERE seq = 14").fetchone()[0]
    store.rescue(conn, cat, "Question: What is it?\nAnswer: A cat.")
    sources.quarantine.write_text("\n".join([duplicate("A cat."), duplicate("A dog."), *lines]))
    store.import_sources(conn, sources)
    view = store.get_record(conn, cat)
    assert view.quarantine.raw == "A cat." and view.rescued


def test_a_context_repeated_for_one_image_names_both_lines(tmp_path, sources):
    lines = sources.contexts.read_text().splitlines()
    sources.contexts.write_text("\n".join([*lines, lines[1]]) + "\n")
    with pytest.raises(InputError, match=r"review_contexts.jsonl:5: image_id 70133 .* on line 2"):
        imported(tmp_path / "other.sqlite", sources)


def test_a_repeated_custom_id_is_an_input_error_naming_it(tmp_path, sources):
    records = json.loads(sources.records.read_text())
    sources.records.write_text(json.dumps([*records, records[3]]))
    with pytest.raises(InputError, match="coco-70133-conversation appears twice"):
        imported(tmp_path / "other.sqlite", sources)


def test_a_record_without_conversations_names_the_file_and_index(tmp_path, sources):
    records = json.loads(sources.records.read_text())
    del records[2]["conversations"]
    sources.records.write_text(json.dumps(records))
    with pytest.raises(
        InputError, match=r"review_llava_instruct.json: record 2: no 'conversations'"
    ):
        imported(tmp_path / "other.sqlite", sources)


def test_a_file_that_is_not_a_database_is_an_input_error(tmp_path):
    (tmp_path / "notes.sqlite").write_text("not sqlite " * 100)
    with pytest.raises(InputError, match="not a review database"):
        store.open_store(tmp_path / "notes.sqlite")


def test_the_list_keeps_source_order_with_quarantined_responses_last(conn):
    page = queries.list_page(conn, Filters())
    assert page.total == 12
    assert keys(page)[0] == "coco-183872-conversation"
    assert keys(page)[-2:] == ["coco-419474-detail", "coco-70133-complex_reasoning"]


def test_filter_by_task(conn):
    page = queries.list_page(conn, Filters(task="detail"))
    assert keys(page) == [
        "coco-183872-detail",
        "coco-70133-detail",
        "coco-30752-detail",
        "coco-419474-detail",
    ]


def test_filter_by_status(conn):
    store.decide(conn, "coco-70133-detail", "rejected", "wrong count")
    assert keys(queries.list_page(conn, Filters(status="rejected"))) == ["coco-70133-detail"]
    assert queries.count(conn, Filters(status="pending")) == 11


def test_filter_by_flag_name_matches_flags_with_a_detail(conn):
    page = queries.list_page(conn, Filters(flag="unseen_category"))
    assert keys(page) == ["coco-30752-conversation"]
    assert page.rows[0].flags == ("unseen_category:horse",)


def test_filter_by_quarantine_reason(conn):
    assert keys(queries.list_page(conn, Filters(quarantine="finish_length"))) == [
        "coco-419474-detail"
    ]
    assert queries.count(conn, Filters(quarantine="any")) == 2
    assert queries.count(conn, Filters(quarantine="none")) == 10


def test_free_text_finds_words_in_answers_and_word_prefixes(conn):
    assert keys(queries.list_page(conn, Filters(q="paws"))) == ["coco-30752-complex_reasoning"]
    assert queries.count(conn, Filters(q="scissor")) == 3


def test_free_text_operators_are_taken_as_words(conn):
    assert queries.fts_query('kite" OR NEAR(*') == '"kite"* "OR"* "NEAR"*'
    assert queries.count(conn, Filters(q='kite" OR NEAR(*')) == 0


def test_filters_combine(conn):
    filters = Filters(task="conversation", q="snow")
    assert keys(queries.list_page(conn, filters)) == [
        "coco-183872-conversation",
        "coco-30752-conversation",
    ]


def test_keyset_pages_walk_every_match_once_and_back(conn):
    first = queries.list_page(conn, Filters(), limit=5)
    second = queries.list_page(conn, Filters(), after=first.after, limit=5)
    third = queries.list_page(conn, Filters(), after=second.after, limit=5)
    assert len(keys(first) + keys(second) + keys(third)) == 12
    assert len(set(keys(first) + keys(second) + keys(third))) == 12
    assert third.after is None and first.before is None
    assert keys(queries.list_page(conn, Filters(), before=third.before, limit=5)) == keys(second)


def test_paging_at_scale_matches_the_filter_exactly(tmp_path, test_data):
    # 6,000 synthetic records in three tasks, every seventh flagged: paging must see each once
    conv = [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A cat."}]
    records = [
        {
            "id": f"{i:012d}",
            "image": f"{i:012d}.jpg",
            "conversations": conv,
            "custom_id": f"coco-{i}-{('conversation', 'detail', 'complex_reasoning')[i % 3]}",
            "flags": ["short_answer"] if i % 7 == 0 else [],
        }
        for i in range(6000)
    ]
    (tmp_path / "big.json").write_text(json.dumps(records))
    conn = imported(
        tmp_path / "big.sqlite",
        store.Sources(tmp_path / "big.json", test_data / "review_contexts.jsonl"),
    )
    filters = Filters(task="detail", flag="short_answer")
    seen, page = [], queries.list_page(conn, filters)
    while True:
        seen += keys(page)
        if page.after is None:
            break
        page = queries.list_page(conn, filters, after=page.after)
    expected = [r["custom_id"] for i, r in enumerate(records) if i % 3 == 1 and i % 7 == 0]
    assert seen == expected and page.total == len(expected)


def test_next_and_previous_follow_the_filter(conn):
    filters = Filters(task="complex_reasoning")
    view = store.get_record(conn, "coco-183872-complex_reasoning")
    assert (
        queries.neighbour(conn, filters, view.seq, forward=True) == "coco-30752-complex_reasoning"
    )
    assert queries.neighbour(conn, filters, view.seq, forward=False) is None
    assert queries.position(conn, filters, view.seq) == 1


def test_a_record_shows_its_context_turns_and_flags(conn):
    view = store.get_record(conn, "coco-70133-conversation")
    assert view.context.file_name == "000000070133.jpg"
    assert [b.category for b in view.context.boxes].count("scissors") == 5
    assert view.turns[0] == store.Turn("human", "What objects are on the table?")
    assert len(view.turns) == 6 and view.flags == ("coordinates_in_answer",)


def test_rejecting_needs_a_reason(conn):
    with pytest.raises(store.ReviewError, match="needs a reason"):
        store.decide(conn, "coco-183872-detail", "rejected", "  ")
    assert store.get_record(conn, "coco-183872-detail").status == "pending"


def test_back_to_pending_forgets_the_decision(conn):
    store.decide(conn, "coco-183872-detail", "rejected", "vague")
    store.decide(conn, "coco-183872-detail", "pending")
    view = store.get_record(conn, "coco-183872-detail")
    assert (view.status, view.reject_reason) == ("pending", "")


def test_a_quarantined_response_cannot_be_accepted_before_its_rescue(conn):
    with pytest.raises(store.ReviewError, match="rescue it"):
        store.decide(conn, "coco-419474-detail", "accepted")


def test_editing_a_turn_keeps_the_image_token_in_the_first_question(conn):
    store.edit_turn(conn, "coco-183872-conversation", 0, "Is the rider on skis or a board?")
    records, _ = _export_all(conn)
    first = records["coco-183872-conversation"]["conversations"][0]["value"]
    assert first == "<image>\nIs the rider on skis or a board?"


def test_an_image_token_after_the_question_stays_after_it(tmp_path, sources):
    records = json.loads(sources.records.read_text())
    records[1]["conversations"][0]["value"] = "Describe this image in detail.\n<image>"
    sources.records.write_text(json.dumps(records))
    conn = imported(tmp_path / "other.sqlite", sources)
    assert store.get_record(conn, "coco-183872-detail").turns[0].value == (
        "Describe this image in detail."
    )
    store.edit_turn(conn, "coco-183872-detail", 0, "Describe the picture.")
    first = _export_all(conn)[0]["coco-183872-detail"]["conversations"][0]["value"]
    assert first == "Describe the picture.\n<image>"


def test_edits_of_different_turns_from_two_tabs_both_stay(conn, tmp_path):
    other_tab = store.open_store(tmp_path / "review.sqlite")
    store.edit_turn(conn, "coco-30752-conversation", 1, "A yellow Labrador.")
    store.edit_turn(other_tab, "coco-30752-conversation", 5, "No, there is no horse.")
    turns = store.get_record(conn, "coco-30752-conversation").turns
    assert (turns[1].value, turns[5].value) == ("A yellow Labrador.", "No, there is no horse.")
    assert [t.edited for t in turns] == [False, True, False, False, False, True]


def test_an_edit_cannot_be_empty_or_carry_the_image_token(conn):
    with pytest.raises(store.ReviewError, match="cannot be empty"):
        store.edit_turn(conn, "coco-183872-detail", 1, " \n ")
    with pytest.raises(store.ReviewError, match="placed automatically"):
        store.edit_turn(conn, "coco-183872-detail", 1, "<image> A snowboarder.")


def test_an_edit_of_a_turn_that_does_not_exist_is_refused(conn):
    with pytest.raises(store.ReviewError, match="has no turn 2"):
        store.edit_turn(conn, "coco-183872-detail", 2, "Extra.")


def test_rescue_turns_a_quarantined_response_into_an_acceptable_record(conn):
    text = "Question: Why keep scissors by a sink?\nAnswer: To rinse hair off the blades."
    store.rescue(conn, "coco-70133-complex_reasoning", text)
    store.decide(conn, "coco-70133-complex_reasoning", "accepted")
    view = store.get_record(conn, "coco-70133-complex_reasoning")
    assert view.rescued and [t.value for t in view.turns] == [
        "Why keep scissors by a sink?",
        "To rinse hair off the blades.",
    ]


def test_rescue_is_only_for_quarantined_responses(conn):
    with pytest.raises(store.ReviewError, match="not quarantined"):
        store.rescue(conn, "coco-183872-detail", "Question: a\nAnswer: b")


def test_export_writes_accepted_records_with_edits_applied(conn, tmp_path):
    store.decide(conn, "coco-183872-detail", "accepted")
    store.edit_turn(conn, "coco-183872-detail", 1, "A snowboarder turns on fresh snow.")
    store.decide(conn, "coco-30752-detail", "rejected", "hallucination")
    store.rescue(
        conn, "coco-419474-detail", "Question: Describe the image.\nAnswer: A kite in a blue sky."
    )
    store.decide(conn, "coco-419474-detail", "accepted")
    conn.close()
    report = store.export(tmp_path / "review.sqlite", tmp_path / "accepted.json")
    out = json.loads((tmp_path / "accepted.json").read_text())
    assert (report.written, report.edited, report.rescued) == (2, 1, 1)
    assert [r["custom_id"] for r in out] == ["coco-183872-detail", "coco-419474-detail"]
    assert out[0]["conversations"][1] == {
        "from": "gpt",
        "value": "A snowboarder turns on fresh snow.",
    }
    assert out[0]["flags"] == ["edited"] and out[0]["id"] == "000000183872"
    assert out[1] == {
        "id": "000000419474",
        "image": "000000419474.jpg",
        "custom_id": "coco-419474-detail",
        "task": "detail",
        "flags": ["rescued:finish_length"],
        "conversations": [
            {"from": "human", "value": "<image>\nDescribe the image."},
            {"from": "gpt", "value": "A kite in a blue sky."},
        ],
    }


def test_a_rescue_outlives_a_rebuild_that_parses_the_response_and_keeps_its_reason(conn, sources):
    store.rescue(conn, "coco-419474-detail", "Question: Describe it.\nAnswer: A kite.")
    store.decide(conn, "coco-419474-detail", "accepted")
    records = json.loads(sources.records.read_text())
    parsed = records[1] | {"id": "000000419474", "custom_id": "coco-419474-detail"}
    sources.records.write_text(json.dumps([*records, parsed]))
    sources.quarantine.write_text(sources.quarantine.read_text().splitlines()[1] + "\n")
    store.import_sources(conn, sources)
    [rec], _ = store.exported_records(conn, "accepted")
    assert rec["flags"] == ["rescued:finish_length"]
    assert rec["conversations"][1] == {"from": "gpt", "value": "A kite."}


def test_a_store_from_before_rescue_reasons_takes_them_from_its_records(conn, tmp_path):
    store.rescue(conn, "coco-419474-detail", "Question: Describe it.\nAnswer: A kite.")
    conn.execute("ALTER TABLE rescues DROP COLUMN reason")
    conn.close()
    reopened = store.open_store(tmp_path / "review.sqlite")
    records, _ = _export_all(reopened)
    assert records["coco-419474-detail"]["flags"] == ["rescued:finish_length"]


def test_export_leaves_out_rescued_responses_without_an_image_id(conn, sources):
    lost = {"custom_id": "batch-7", "reason": "unparseable", "raw": "A kite."}
    with sources.quarantine.open("a") as f:
        f.write(json.dumps(lost) + "\n")
    store.import_sources(conn, sources)
    store.rescue(conn, "batch-7", "Question: What flies?\nAnswer: A kite.")
    store.decide(conn, "batch-7", "accepted")
    records, report = store.exported_records(conn, "accepted")
    assert records == [] and report.without_image == 1


def test_export_of_all_leaves_out_quarantined_responses_never_rescued(conn):
    records, report = _export_all(conn)
    assert len(records) == 10 and report.not_rescued == 2


def test_export_of_an_unknown_status_is_refused(conn):
    with pytest.raises(store.ReviewError, match="unknown status 'done'"):
        store.exported_records(conn, "done")


def test_export_refuses_to_overwrite_a_source_file(conn, tmp_path, sources):
    conn.close()
    with pytest.raises(InputError, match="is a source of this review"):
        store.export(tmp_path / "review.sqlite", sources.records, "all")


def test_export_without_a_database_says_how_to_start_one(tmp_path):
    with pytest.raises(InputError, match="no review database"):
        store.export(tmp_path / "missing.sqlite", tmp_path / "out.json")
    assert not (tmp_path / "missing.sqlite").exists()


def test_summary_gives_acceptance_per_task_and_flag(conn):
    store.decide(conn, "coco-183872-conversation", "accepted")
    store.decide(conn, "coco-30752-conversation", "rejected", "hallucination")
    store.decide(conn, "coco-183872-complex_reasoning", "accepted")
    s = queries.summary(conn)
    assert (s.overall.total, s.overall.accepted, s.overall.rejected) == (10, 2, 1)
    by_task = {t.name: t for t in s.by_task}
    assert by_task["conversation"].acceptance == 0.5
    assert by_task["detail"].acceptance is None
    by_flag = {t.name: t for t in s.by_flag}
    assert by_flag["unseen_category"].acceptance == 0.0
    assert by_flag["short_answer"].acceptance == 1.0
    assert s.reject_reasons == (("hallucination", 1),)
    assert queries.progress(conn) == s.overall


def _export_all(conn) -> tuple[dict[str, dict], store.ExportReport]:
    records, report = store.exported_records(conn, "all")
    return {r["custom_id"]: r for r in records}, report


# --- rescue text ----------------------------------------------------------------------------


def test_rescue_text_splits_turns_with_multi_line_answers():
    text = (
        "Question: What is it?\nAnswer: A kite.\n\nIt flies.\nquestion: Where?\nanswer:  High up."
    )
    assert turns_from_text("conversation", text) == [
        ("What is it?", "A kite.\n\nIt flies."),
        ("Where?", "High up."),
    ]


def test_rescue_text_before_the_first_question_is_refused():
    with pytest.raises(RescueError, match="line 1: text before"):
        turns_from_text("conversation", "Hello\nQuestion: a\nAnswer: b")


def test_rescue_text_needs_an_answer_for_each_question():
    with pytest.raises(RescueError, match="turn 2 has an empty answer"):
        turns_from_text("conversation", "Question: a\nAnswer: b\nQuestion: c")


def test_a_detail_or_reasoning_rescue_takes_exactly_one_pair():
    with pytest.raises(RescueError, match="exactly one question"):
        turns_from_text("complex_reasoning", "Question: a\nAnswer: b\nQuestion: c\nAnswer: d")


def test_the_rescue_draft_puts_raw_text_under_an_answer():
    assert (
        rescue_draft("detail", " A kite is ")
        == "Question: Describe this image in detail.\nAnswer: A kite is"
    )
    assert rescue_draft("conversation", "Question: a\nAnswer: b") == "Question: a\nAnswer: b"


def test_sources_fingerprint_changes_with_the_file(sources):
    before = sources.fingerprint()
    os.utime(sources.contexts, ns=(1, 1))
    assert sources.fingerprint() != before
