"""WATCH_ELASTICSEARCH against a real Elasticsearch node and real worker processes."""

from __future__ import annotations

import itertools
import time

import pytest

from shared.ledger import Ledger
from tests.support.elasticsearch import ElasticsearchNode, PodLog
from tests.support.pg import PG_PASSWORD
from tests.support.workers import StartWorker, wait_finished, wait_until

pytestmark = pytest.mark.postgres

_names = itertools.count()


@pytest.fixture
def db_url(pg_url: str) -> str:
    return pg_url


@pytest.fixture
def pod(es_node: ElasticsearchNode) -> PodLog:
    n = next(_names)
    return PodLog(es_node.client(), f"logs-test-{n}", f"train-{n}-x7k2p")


def watch_settings(es_node: ElasticsearchNode, **extra: object) -> dict[str, object]:
    return {
        "elasticsearch_url": es_node.url,
        "elasticsearch_watch_poll_seconds": 0.2,
        "elasticsearch_watch_settle_seconds": 1.0,
        **extra,
    }


def submit(ledger: Ledger, pod: PodLog, **payload: object) -> int:
    job_name = pod.pod.rsplit("-", 1)[0]
    fields = {
        "context_name": "test",
        "entity_id": "1",
        "job_name": job_name,
        "completion_msgs": ["TRAINING DONE"],
        "failure_msgs": ["TRAINING FAILED"],
        **payload,
    }
    return ledger.enqueue("WATCH_ELASTICSEARCH", fields, "ann").id


def copied(ledger: Ledger, job_id: int) -> list[str]:
    """The pod lines in the job's log, without their identity prefix."""
    return [
        ln.message.split("] ", 1)[1]
        for ln in ledger.read_logs(job_id, limit=10000)
        if ln.message.startswith("[train-")
    ]


def test_lines_copied_in_order_with_secrets_masked_until_completion(
    ledger: Ledger, start_worker: StartWorker, es_node: ElasticsearchNode, pod: PodLog
) -> None:
    """Lines written before and while the job watches are copied once, in order; the
    database password in a line is masked; the completion text ends the job in SUCCESS."""
    pod.write("epoch 1", "epoch 2")
    start_worker(**watch_settings(es_node))
    job_id = submit(ledger, pod)
    wait_until(lambda: len(copied(ledger, job_id)) == 2, 30, "the first lines")
    pod.write(f"connecting with password {PG_PASSWORD}", "epoch 3")
    pod.write("TRAINING DONE in 3 epochs", "a line after the end")
    job = wait_finished(ledger, job_id, 60)
    assert job.status == "SUCCESS", job.error
    assert copied(ledger, job_id) == [
        "epoch 1",
        "epoch 2",
        "connecting with password ****",
        "epoch 3",
        "TRAINING DONE in 3 epochs",
    ]
    assert all(PG_PASSWORD not in ln.message for ln in ledger.read_logs(job_id, limit=10000))


def test_lines_arriving_out_of_order_are_copied_in_order(
    ledger: Ledger, start_worker: StartWorker, es_node: ElasticsearchNode, pod: PodLog
) -> None:
    """A shipper delivers a batch backwards: the lines are copied in the pod's order."""
    start_worker(**watch_settings(es_node))
    job_id = submit(ledger, pod)
    docs = [pod.line(f"line {i}") for i in range(6)] + [pod.line("TRAINING DONE")]
    pod.index_docs(docs[3:][::-1])
    time.sleep(0.4)
    pod.index_docs(docs[:3][::-1])
    job = wait_finished(ledger, job_id, 60)
    assert job.status == "SUCCESS", job.error
    assert copied(ledger, job_id) == [f"line {i}" for i in range(6)] + ["TRAINING DONE"]


def test_failure_text_fails_the_job_once(
    ledger: Ledger, start_worker: StartWorker, es_node: ElasticsearchNode, pod: PodLog
) -> None:
    """A failure line ends the job in FAILURE with the text named, without a retry."""
    start_worker(**watch_settings(es_node))
    job_id = submit(ledger, pod)
    pod.write("loading data", "TRAINING FAILED: out of memory")
    job = wait_finished(ledger, job_id, 60)
    assert job.status == "FAILURE"
    assert job.attempt == 1
    assert "TRAINING FAILED" in (job.error or "")
    assert copied(ledger, job_id) == ["loading data", "TRAINING FAILED: out of memory"]


def test_silent_pod_fails_after_the_timeout(
    ledger: Ledger, start_worker: StartWorker, es_node: ElasticsearchNode, pod: PodLog
) -> None:
    """No new line for timeout_seconds: FAILURE, with a message saying so."""
    start_worker(**watch_settings(es_node))
    pod.write("started")
    job_id = submit(ledger, pod, timeout_seconds=3)
    job = wait_finished(ledger, job_id, 60)
    assert job.status == "FAILURE"
    assert "no new log line" in (job.error or "") and "timeout" in (job.error or "")
    assert copied(ledger, job_id) == ["started"]


def test_killed_worker_watch_resumes_without_duplicates(
    ledger: Ledger, start_worker: StartWorker, es_node: ElasticsearchNode, pod: PodLog
) -> None:
    """kill -9 of the worker mid-watch: the next attempt, on another worker, copies the
    remaining lines after those already copied: none twice, none lost."""
    settings = watch_settings(es_node, job_lease_seconds=1.0, worker_sweep_seconds=0.2)
    first = start_worker(**settings)
    job_id = submit(ledger, pod)
    pod.write(*(f"step {i}" for i in range(20)))
    wait_until(lambda: len(copied(ledger, job_id)) >= 5, 30, "some lines copied")
    first.kill()
    pod.write(*(f"step {i}" for i in range(20, 30)))
    start_worker(**settings)
    pod.write("TRAINING DONE")
    job = wait_finished(ledger, job_id, 90)
    assert job.status == "SUCCESS", job.error
    assert job.attempt == 2
    assert copied(ledger, job_id) == [f"step {i}" for i in range(30)] + ["TRAINING DONE"]
