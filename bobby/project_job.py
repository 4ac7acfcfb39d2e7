"""Following a retraining Job (``shared.kube.jobs``) to its end, its pod's lines in the job log.

The Job's status decides the outcome (succeeded; failed with Kubernetes' reason:
``BackoffLimitExceeded`` for a project that exited non-zero, ``DeadlineExceeded`` past
RETRAIN_KUBERNETES_DEADLINE_SECONDS). The pod's lines reach the job log two ways:

- with ELASTICSEARCH_URL, while the Job runs, through the WATCH_ELASTICSEARCH machinery
  (``bobby.handlers.elasticsearch.Watch``: in order, each once, secrets masked), and after
  the Job ended until no new line came for a settle period (shippers lag);
- without it, once the Job ended, from the API server (``pods/log``), which reads the
  node's kubelet: nothing while the Job runs, nothing once the pod is gone.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

from loguru import logger

from bobby.handlers.base import JobControl
from bobby.handlers.elasticsearch import ElasticsearchLogSource, PodLine, Watch
from shared.errors import TargetUnavailable
from shared.handlers import WatchElasticsearchPayload
from shared.kube.jobs import JobState, ProjectJobs
from shared.settings import Settings

TAIL_LINES = 20
# After the Job ended: how long the follower waits for lines still on their way at most.
DRAIN_SECONDS = 60.0


class _Copied(Watch):
    """A watch with no completion or failure texts (the Job's status decides) that keeps the
    last lines copied, for the error of a failed Job."""

    def __init__(self, source: ElasticsearchLogSource, name: str, settings: Settings) -> None:
        payload = WatchElasticsearchPayload.model_construct(
            context_name="retrain",
            entity_id=name,
            job_name=name,
            completion_msgs=[],  # below the payload's own minimum: no text ends this watch
            failure_msgs=[],
            # No line for the Job's whole deadline is no reason to stop: its status is.
            timeout_seconds=float(settings.retrain_kubernetes_deadline_seconds) + DRAIN_SECONDS,
        )
        super().__init__(source, payload, settings)
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)

    def copy(self, line: PodLine) -> None:
        self.tail.append(line.message)
        super().copy(line)


def follow(
    jobs: ProjectJobs,
    name: str,
    settings: Settings,
    control: JobControl,
    check: Callable[[], None],
) -> tuple[JobState, list[str]]:
    """Wait for the Job ``name`` to end, its pod's lines copied; (its state, last lines)."""
    watch = (
        _Copied(ElasticsearchLogSource(settings), name, settings)
        if settings.elasticsearch_url
        else None
    )
    if watch is None:
        logger.info(
            "ELASTICSEARCH_URL is not set: the pod's lines are read from the API server "
            "when the Job has ended"
        )
    poll = settings.retrain_kubernetes_poll_seconds
    last = ""
    while True:
        state = jobs.state(name)
        if state.line != last:
            last = state.line
            logger.info("Job {}: {}", name, last)
        if watch is not None:
            _poll(watch)
        if state.done:
            break
        control.cancel.wait(poll)
        check()
    if watch is not None:
        _drain(watch, settings)
        return state, list(watch.tail)
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    for pod in jobs.pods(name):
        try:
            lines = jobs.pod_log(pod)
        except Exception as exc:  # the outcome stands without the lines
            logger.warning("could not read the log of pod {}: {}", pod, exc)
            continue
        for line in lines:
            tail.append(line)
            logger.info("[{}] {}", pod, line)
    return state, list(tail)


def _poll(watch: _Copied) -> None:
    """One read of new lines; Elasticsearch failing for a moment (an index being created,
    a node restarting) loses no line: the next poll reads from the same place."""
    try:
        watch.poll()
    except TargetUnavailable as exc:
        logger.warning("{} (reading the pod's lines again in a moment)", exc.message)


def _drain(watch: _Copied, settings: Settings) -> None:
    """Copy the lines still arriving: until none came for the settle time and two polls."""
    poll = settings.elasticsearch_watch_poll_seconds
    quiet = settings.elasticsearch_watch_settle_seconds + 2 * poll
    deadline = time.monotonic() + DRAIN_SECONDS
    while time.monotonic() < deadline:
        if time.monotonic() - watch.last_new > quiet and not watch.first_seen:
            return
        time.sleep(poll)
        _poll(watch)
    logger.warning(
        "lines of {} were still arriving {:g}s after it ended",
        watch.payload.job_name,
        DRAIN_SECONDS,
    )
