"""An interactive batch answered by a person at a (pseudo) terminal."""

from __future__ import annotations

import pexpect
from conftest import Env, write_records


def test_an_interactive_worker_shows_each_record_and_stores_the_answer(env: Env) -> None:
    write_records(env.data / "records.jsonl", 2)
    batch_id = env.create("t_review", "batch.interactive=true", "batch.concurrency=2")
    args = env.args("batch.command=run", "batch.interactive=true", "batch.idle_timeout=1")
    child = pexpect.spawn(
        args[0], args[1:], env=env.environ, encoding="utf-8", timeout=30, dimensions=(50, 200)
    )
    try:
        answers = {}
        for reply in ("1", "no"):
            child.expect(r"record (r0000\d)")
            record_id = child.match.group(1)
            child.expect("Is the sentiment label right\\?")
            child.expect(r"answer \[1-3\]: ")
            child.sendline(reply)
            answers[record_id] = "yes" if reply == "1" else "no"
        child.expect(pexpect.EOF, timeout=30)
    finally:
        child.close()
    assert child.exitstatus == 0

    assert env.batch_status(batch_id) == "completed"
    for record_id, answer in answers.items():
        job = env.store().get_job(batch_id, record_id)
        assert job.result is not None
        review = job.result["outputs"]["review"]
        assert review == {
            "skipped": False,
            "question": "Is the sentiment label right?",
            "answer": answer,
        }
        assert job.result["outputs"]["vader"]["label"] in {"positive", "negative", "neutral"}


def test_an_answer_outside_the_choices_is_asked_again(env: Env) -> None:
    write_records(env.data / "records.jsonl", 1)
    batch_id = env.create("t_review", "batch.interactive=true")
    args = env.args("batch.command=run", "batch.interactive=true", "batch.idle_timeout=1")
    child = pexpect.spawn(
        args[0], args[1:], env=env.environ, encoding="utf-8", timeout=30, dimensions=(50, 200)
    )
    try:
        child.expect(r"answer \[1-3\]: ")
        child.sendline("7")
        child.expect("'7' is not one of the choices")
        child.expect(r"answer \[1-3\]: ")
        child.sendline("Unsure")
        child.expect(pexpect.EOF, timeout=30)
    finally:
        child.close()

    job = env.store().get_job(batch_id, "r00000")
    assert job.result is not None and job.result["outputs"]["review"]["answer"] == "unsure"


def test_create_with_wait_on_an_interactive_batch_asks_in_the_same_terminal(env: Env) -> None:
    write_records(env.data / "records.jsonl", 1)
    args = env.args(
        "flow=t_review", "batch.interactive=true", "batch.wait=true", "batch.format=json"
    )
    child = pexpect.spawn(
        args[0], args[1:], env=env.environ, encoding="utf-8", timeout=30, dimensions=(50, 200)
    )
    try:
        child.expect(r"answer \[1-3\]: ")
        child.sendline("2")
        child.expect('"status": "completed"')
        child.expect(pexpect.EOF, timeout=30)
    finally:
        child.close()
    assert child.exitstatus == 0
