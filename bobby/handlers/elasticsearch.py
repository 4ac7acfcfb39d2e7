"""WATCH_ELASTICSEARCH: copy a Kubernetes Job's pod log lines from Elasticsearch into the
job's log until a completion or failure text appears, or the pods go silent.

Log shippers (Filebeat, Elastic Agent) write one document per line: ``kubernetes.pod.name``,
``@timestamp``, ``log.offset`` (the line's byte offset in the container's log file) and
``message``. Lines are copied in (``@timestamp``, ``log.offset``) order, each once:

- *Out-of-order arrival.* Shippers deliver in batches, several at a time, so a line can
  become searchable after a later one. A new line waits ELASTICSEARCH_WATCH_SETTLE_SECONDS
  after the watcher first sees it, and lines are copied in order up to the first one still
  waiting, so late lines within that window take their place. One later still (behind lines
  already copied, within ELASTICSEARCH_WATCH_LOOKBACK_SECONDS) is copied with a warning
  rather than lost.
- *Resume.* Each copied line starts with ``[<pod>:<offset>]``, its identity; the job's log
  (``job_logs``) is the only record of what was copied. A new attempt after a crash reads it
  back and skips those lines: lines the killed worker had not yet written are copied again,
  once. A completion or failure line copied by the earlier attempt ends the new one at once.
- *Secrets.* Lines go through the job log sink, which masks every configured secret.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from loguru import logger

from bobby.handlers import register
from bobby.handlers.base import Handler, Step
from shared.errors import ConfigError, TargetUnavailable, WatchFailed
from shared.handlers import SPECS, WatchElasticsearchPayload
from shared.settings import Settings

# The identity prefix of a copied line in the job log: "[<pod>:<offset or document id>] ".
_COPIED = re.compile(r"^\[(?P<ident>[a-z0-9.-]+:[^\]\s]+)\] (?P<message>.*)\Z", re.DOTALL)
_PAGE = 1000


@dataclass(frozen=True)
class PodLine:
    """One log line of a pod, as its shipper indexed it."""

    pod: str
    timestamp_ms: int
    offset: int | None
    doc_id: str
    message: str

    @property
    def ident(self) -> str:
        """Unique per line: the pod and the line's offset in its log file."""
        return f"{self.pod}:{self.offset if self.offset is not None else self.doc_id}"

    @property
    def key(self) -> tuple[int, int, str, str]:
        return (
            self.timestamp_ms,
            -1 if self.offset is None else self.offset,
            self.pod,
            self.doc_id,
        )


class LogSource(Protocol):
    """Where pods' log lines are read (Elasticsearch; a list in the unit tests)."""

    def lines(self, job_name: str, since_ms: int | None) -> Iterable[PodLine]:
        """Lines of the Job's pods at or after ``since_ms`` (all if None), in any order."""
        ...


def job_pod(job_name: str) -> re.Pattern[str]:
    """Names Kubernetes gives a Job's pods: <job>-<5 chars>, <job>-<index>-<5 chars>; or a
    pod named exactly <job>."""
    job = re.escape(job_name)
    return re.compile(rf"{job}|{job}(-\d+)?-[a-z0-9]{{5}}")


class ElasticsearchLogSource:
    """Reads lines with the official client's DSL, paging through a point in time."""

    def __init__(self, settings: Settings) -> None:
        if not settings.elasticsearch_url:
            raise ConfigError("WATCH_ELASTICSEARCH needs ELASTICSEARCH_URL")
        try:
            from elasticsearch import Elasticsearch
        except ImportError:
            raise ConfigError(
                "WATCH_ELASTICSEARCH needs the Elasticsearch client: pip install "
                "'mlmanager[elasticsearch]'"
            ) from None
        auth: dict[str, Any] = {}
        if settings.elasticsearch_api_key is not None:
            auth["api_key"] = settings.elasticsearch_api_key.get_secret_value()
        elif settings.elasticsearch_username:
            password = settings.elasticsearch_password
            auth["basic_auth"] = (
                settings.elasticsearch_username,
                password.get_secret_value() if password else "",
            )
        if settings.elasticsearch_ca_certs is not None:
            auth["ca_certs"] = str(settings.elasticsearch_ca_certs)
        self.client = Elasticsearch(settings.elasticsearch_url, request_timeout=30, **auth)
        self.indices = [i.strip() for i in settings.elasticsearch_index.split(",") if i.strip()]

    def lines(self, job_name: str, since_ms: int | None) -> Iterator[PodLine]:
        from elasticsearch import ApiError, TransportError
        from elasticsearch.dsl import Q, Search

        # The pod name is a keyword (Filebeat's template) or text with a .keyword
        # sub-field (dynamic mapping); the query finds both, the regex keeps the exact names.
        field = "kubernetes.pod.name"
        pods = Q(
            "bool",
            should=[
                Q("prefix", **{field: f"{job_name}-"}),
                Q("match_phrase", **{field: job_name}),
                Q("prefix", **{f"{field}.keyword": f"{job_name}-"}),
                Q("term", **{f"{field}.keyword": job_name}),
            ],
            minimum_should_match=1,
        )
        search = Search(using=self.client, index=self.indices).query(pods)
        if since_ms is not None:
            search = search.filter(
                "range", **{"@timestamp": {"gte": since_ms, "format": "epoch_millis"}}
            )
        search = (
            search.sort(
                {"@timestamp": {"order": "asc", "unmapped_type": "date"}},
                {"log.offset": {"order": "asc", "unmapped_type": "long"}},
            )
            .source(["@timestamp", "log.offset", field, "message"])
            .extra(size=_PAGE)
        )
        names = job_pod(job_name)
        try:
            for hit in search.iterate(keep_alive="1m"):
                pod = str(hit.kubernetes.pod.name)
                if not names.fullmatch(pod):
                    continue
                log = hit.to_dict().get("log") or {}
                offset = log.get("offset")
                yield PodLine(
                    pod=pod,
                    timestamp_ms=int(hit.meta.sort[0]),
                    offset=int(offset) if offset is not None else None,
                    doc_id=str(hit.meta.id),
                    message=str(hit.to_dict().get("message", "")).rstrip("\n"),
                )
        except ApiError as exc:
            if exc.meta.status == 404 and exc.error == "index_not_found_exception":
                return  # a named index the shippers have not written to yet: no line yet
            if exc.meta.status >= 500:
                raise TargetUnavailable(f"Elasticsearch: {exc}") from None
            raise WatchFailed(
                f"Elasticsearch refused the search ({exc.meta.status}): {exc}"
            ) from None
        except TransportError as exc:
            raise TargetUnavailable(f"Elasticsearch is unreachable: {exc}") from None


@dataclass(frozen=True)
class Outcome:
    success: bool
    text: str


def outcome_of(message: str, payload: WatchElasticsearchPayload) -> Outcome | None:
    """Failure texts win over completion texts in the same line."""
    for text in payload.failure_msgs:
        if text in message:
            return Outcome(False, text)
    for text in payload.completion_msgs:
        if text in message:
            return Outcome(True, text)
    return None


class Watch:
    """The copy loop, apart from the handler so it runs on any LogSource."""

    def __init__(
        self,
        source: LogSource,
        payload: WatchElasticsearchPayload,
        settings: Settings,
        copied: Iterable[str] = (),
        clock: Any = time.monotonic,
    ) -> None:
        self.source = source
        self.payload = payload
        self.settle = settings.elasticsearch_watch_settle_seconds
        self.lookback_ms = int(settings.elasticsearch_watch_lookback_seconds * 1000)
        self.timeout = payload.timeout_seconds or settings.elasticsearch_watch_timeout_seconds
        self.copied: set[str] = set(copied)
        self.clock = clock
        self.first_seen: dict[str, float] = {}
        self.last_key: tuple[int, int, str, str] | None = None
        self.cursor_ms: int | None = None
        self.last_new = clock()

    def poll(self) -> Outcome | None:
        """Read the new lines once and copy those that settled; the outcome, if one came."""
        since = None if self.cursor_ms is None else self.cursor_ms - self.lookback_ms
        fresh: list[PodLine] = []
        for line in self.source.lines(self.payload.job_name, since):
            if line.ident in self.copied:
                self._advance(line)
            else:
                fresh.append(line)
        now = self.clock()
        for line in fresh:
            if line.ident not in self.first_seen:
                self.first_seen[line.ident] = now
                self.last_new = now
        for line in sorted(fresh, key=lambda ln: ln.key):
            if now - self.first_seen[line.ident] < self.settle:
                break
            outcome = self.copy(line)
            if outcome is not None:
                return outcome
        if now - self.last_new > self.timeout:
            raise WatchFailed(
                f"no new log line from the pods of {self.payload.job_name} for "
                f"{self.timeout:g}s (timeout); the pod may be stuck, or its lines no longer "
                "reach Elasticsearch"
            )
        return None

    def copy(self, line: PodLine) -> Outcome | None:
        if self.last_key is not None and line.key < self.last_key:
            logger.warning(
                "the next line of {} reached Elasticsearch after later lines were copied",
                line.pod,
            )
        logger.info("[{}] {}", line.ident, line.message)
        self.copied.add(line.ident)
        self.first_seen.pop(line.ident, None)
        self._advance(line)
        return outcome_of(line.message, self.payload)

    def _advance(self, line: PodLine) -> None:
        if self.last_key is None or line.key > self.last_key:
            self.last_key = line.key
            self.cursor_ms = line.timestamp_ms


def copied_lines(messages: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(identity, message) of the pod lines in a job's log."""
    for message in messages:
        match = _COPIED.match(message)
        if match:
            yield match["ident"], match["message"]


@register
class WatchElasticsearch(Handler):
    spec = SPECS["WATCH_ELASTICSEARCH"]

    def steps(self) -> list[Step]:
        return [
            ("connecting to Elasticsearch", self.connect),
            ("reading the lines copied by earlier attempts", self.resume),
            (f"following the pods of {self.watched.job_name}", self.follow),
        ]

    @property
    def watched(self) -> WatchElasticsearchPayload:
        assert isinstance(self.payload, WatchElasticsearchPayload)
        return self.payload

    def connect(self) -> None:
        self.source = ElasticsearchLogSource(self.ctx.settings)
        p = self.watched
        logger.info(
            "watching {} {}: pods of {} in {} (completion: {}; failure: {})",
            p.context_name,
            p.entity_id,
            p.job_name,
            self.ctx.settings.elasticsearch_index,
            p.completion_msgs,
            p.failure_msgs or "none",
        )

    def resume(self) -> None:
        self.copied: list[str] = []
        self.ended: Outcome | None = None
        for ident, message in copied_lines(self._job_log()):
            self.copied.append(ident)
            if self.ended is None:
                self.ended = outcome_of(message, self.watched)
        if self.copied:
            logger.info("{} line(s) were copied by an earlier attempt", len(self.copied))

    def follow(self) -> None:
        outcome = self.ended
        if outcome is None:
            watch = Watch(self.source, self.watched, self.ctx.settings, self.copied)
            poll = self.ctx.settings.elasticsearch_watch_poll_seconds
            while (outcome := watch.poll()) is None:
                self.ctx.control.cancel.wait(poll)
                self.ctx.check()
        if not outcome.success:
            raise WatchFailed(
                f"a line of {self.watched.job_name} reports failure: {outcome.text!r}"
            )
        logger.info("a line of {} reports completion: {!r}", self.watched.job_name, outcome.text)

    def _job_log(self) -> Iterator[str]:
        after = 0
        while True:
            page = self.ctx.ledger.read_logs(self.ctx.job.id, after_line=after, limit=5000)
            if not page:
                return
            yield from (ln.message for ln in page)
            after = page[-1].line
