"""The watcher's copy loop on an in-memory log source (the real node: tests/integration)."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from loguru import logger

from bobby.handlers.elasticsearch import PodLine, Watch, copied_lines
from shared.errors import WatchFailed
from shared.handlers import WatchElasticsearchPayload
from shared.settings import load_settings


class ListSource:
    def __init__(self) -> None:
        self.docs: list[PodLine] = []

    def add(self, offset: int, message: str) -> None:
        self.docs.append(PodLine("job-abcde", 1000 + offset, offset, f"d{offset}", message))

    def lines(self, job_name: str, since_ms: int | None) -> Iterable[PodLine]:
        return [d for d in self.docs if since_ms is None or d.timestamp_ms >= since_ms]


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


PAYLOAD = WatchElasticsearchPayload(
    context_name="c", entity_id="1", job_name="job", completion_msgs=["DONE"], timeout_seconds=5
)


def run(watch: Watch) -> list[str]:
    messages: list[str] = []
    sink = logger.add(lambda m: messages.append(m.record["message"]), level="INFO")
    try:
        watch.poll()
    finally:
        logger.remove(sink)
    return messages


def test_a_late_line_within_the_settle_window_takes_its_place() -> None:
    source, clock = ListSource(), Clock()
    watch = Watch(source, PAYLOAD, load_settings(elasticsearch_watch_settle_seconds=2), clock=clock)
    source.add(20, "second")
    assert run(watch) == []  # seen, not settled
    clock.now = 1.0
    source.add(10, "first")
    assert run(watch) == []  # "second" has settled but "first" sorts before it
    clock.now = 3.5
    assert run(watch) == ["[job-abcde:10] first", "[job-abcde:20] second"]


def test_resume_skips_lines_already_in_the_job_log() -> None:
    source, clock = ListSource(), Clock()
    for i in range(3):
        source.add(i, f"line {i}")
    log = ["Step 1/3: connecting", "[job-abcde:0] line 0", "[job-abcde:1] line 1"]
    idents = [ident for ident, _ in copied_lines(log)]
    watch = Watch(
        source, PAYLOAD, load_settings(elasticsearch_watch_settle_seconds=0), idents, clock
    )
    assert run(watch) == ["[job-abcde:2] line 2"]


def test_silence_beyond_the_timeout_fails() -> None:
    source, clock = ListSource(), Clock()
    watch = Watch(source, PAYLOAD, load_settings(), clock=clock)
    clock.now = 6.0
    with pytest.raises(WatchFailed, match="no new log line"):
        watch.poll()
