"""The journal: one row per custom_id, resumable, readable with plain SQL."""

from __future__ import annotations

import sqlite3

import pytest

from instructgen.client.journal import Journal, Outcome
from instructgen.errors import InputError

REQS = [("coco-1-detail", 1, "aaa"), ("coco-2-detail", 2, "bbb"), ("coco-3-detail", 3, "ccc")]


def test_new_requests_start_pending_in_file_order(tmp_path):
    with Journal(tmp_path / "j.sqlite") as j:
        j.sync(REQS, resend_changed=False)
        assert j.todo() == ["coco-1-detail", "coco-2-detail", "coco-3-detail"]


def test_journal_is_plain_sqlite_in_wal_mode(tmp_path):
    with Journal(tmp_path / "j.sqlite") as j:
        j.sync(REQS, resend_changed=False)
    db = sqlite3.connect(tmp_path / "j.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT count(*) FROM requests WHERE status = 'pending'").fetchone()[0] == 3


def test_done_requests_are_not_sent_again_and_in_flight_ones_are(tmp_path):
    with Journal(tmp_path / "j.sqlite") as j:
        j.sync(REQS, resend_changed=False)
        j.start_attempt("coco-1-detail")
        j.finish("coco-1-detail", Outcome("done", 200, {"choices": []}))
        j.start_attempt("coco-2-detail")  # then the process dies
    with Journal(tmp_path / "j.sqlite") as j:
        j.sync(REQS, resend_changed=False)
        assert j.todo() == ["coco-2-detail", "coco-3-detail"]


def test_a_released_request_is_pending_again_and_a_done_one_stays_done(tmp_path):
    with Journal(tmp_path / "j.sqlite") as j:
        j.sync(REQS, resend_changed=False)
        j.start_attempt("coco-1-detail")
        j.finish("coco-1-detail", Outcome("done", 200, {"choices": []}))
        j.start_attempt("coco-2-detail")
        for cid in ("coco-1-detail", "coco-2-detail"):
            j.release(cid)
        assert j.counts().done == 1 and j.counts().pending == 2
        status = dict(j.db.execute("SELECT custom_id, status FROM requests").fetchall())
        assert status["coco-2-detail"] == "pending"


def test_a_changed_request_that_is_done_is_refused_with_the_fix(tmp_path):
    with Journal(tmp_path / "j.sqlite") as j:
        j.sync(REQS, resend_changed=False)
        j.finish("coco-1-detail", Outcome("done", 200, {}))
        changed = [("coco-1-detail", 1, "zzz"), *REQS[1:]]
        with pytest.raises(InputError, match="coco-1-detail.*--resend-changed"):
            j.sync(changed, resend_changed=False)
        assert j.sync(changed, resend_changed=True) == 1
        assert j.todo()[0] == "coco-1-detail"


def test_a_changed_request_not_yet_done_just_takes_the_new_hash(tmp_path):
    with Journal(tmp_path / "j.sqlite") as j:
        j.sync(REQS, resend_changed=False)
        assert j.sync([("coco-1-detail", 1, "zzz")], resend_changed=False) == 1
        assert j.todo() == ["coco-1-detail"]  # rows not in the input are left out


def test_counts_sum_tokens_and_cost_of_done_requests(tmp_path):
    with Journal(tmp_path / "j.sqlite") as j:
        j.sync(REQS, resend_changed=False)
        j.finish("coco-1-detail", Outcome("done", 200, {}, "stop", 100, 20, 0, 0.5))
        j.finish("coco-2-detail", Outcome("failed", 400, error_code="http_400", error_message="x"))
        c = j.counts()
        assert (c.total, c.done, c.failed, c.pending) == (3, 1, 1, 1)
        assert (c.prompt_tokens, c.completion_tokens, c.cost_usd) == (100, 20, 0.5)


def test_a_file_that_is_not_sqlite_is_a_clear_error(tmp_path):
    bad = tmp_path / "j.sqlite"
    bad.write_text("not a database" * 100)
    with pytest.raises(InputError, match="not a usable journal"):
        Journal(bad)


def test_a_request_changed_while_a_batch_holds_it_is_refused_naming_it(tmp_path):
    with Journal(tmp_path / "j.sqlite") as j:
        j.sync(REQS, resend_changed=False)
        j.add_batch("file-1", "/v1/chat/completions", ["coco-1-detail"])
        changed = [("coco-1-detail", 1, "zzz"), *REQS[1:]]
        for resend_changed in (False, True):  # the batch would answer the old request
            with pytest.raises(InputError, match="coco-1-detail.*batch"):
                j.sync(changed, resend_changed=resend_changed)


def test_unfinished_lists_pending_and_in_flight_requests_in_file_order(tmp_path):
    with Journal(tmp_path / "j.sqlite") as j:
        j.sync(REQS, resend_changed=False)
        j.finish("coco-1-detail", Outcome("failed", 400, error_code="http_400", error_message="x"))
        j.start_attempt("coco-3-detail")
        assert j.unfinished() == ["coco-2-detail", "coco-3-detail"]
