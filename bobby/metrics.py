"""The worker's Prometheus metrics (text exposition format, no extra dependency)."""

from __future__ import annotations

import bisect
import threading

# Seconds from a job becoming runnable to a worker marking it RUNNING.
DISPATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
COUNTERS = {
    "claimed": "Jobs this worker claimed",
    "succeeded": "Jobs that ended SUCCESS on this worker",
    "failed": "Jobs that ended FAILURE on this worker",
    "retried": "Failed attempts given back to PENDING for a retry",
    "cancelled": "Jobs that stopped at a cancel check",
    "released": "Jobs released to PENDING at shutdown",
    "expired": "Jobs of dead workers returned by this worker's sweep",
}


# Seconds from a row's insert (its eval_time) to its prediction, in async scoring.
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class _Histogram:
    """A Prometheus histogram (the caller holds the lock)."""

    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...]) -> None:
        self.name, self.help_text, self.buckets = name, help_text, buckets
        self.counts = [0] * len(buckets)
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        i = bisect.bisect_left(self.buckets, seconds)
        if i < len(self.counts):
            self.counts[i] += 1
        self.total += seconds
        self.count += 1

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} histogram"]
        cumulative = 0
        for bound, count in zip(self.buckets, self.counts, strict=True):
            cumulative += count
            out.append(f'{self.name}_bucket{{le="{bound}"}} {cumulative}')
        out.append(f'{self.name}_bucket{{le="+Inf"}} {self.count}')
        out.append(f"{self.name}_sum {self.total:.6f}")
        out.append(f"{self.name}_count {self.count}")
        return out


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.queue_depth = 0
        self.running = 0
        self.database_up = 0
        self.rows_scored = 0
        self.rows_failed = 0
        self._dispatch = _Histogram(
            "mlmanager_dispatch_latency_seconds", "From runnable to RUNNING", DISPATCH_BUCKETS
        )
        self._lag = _Histogram(
            "mlmanager_async_scoring_lag_seconds",
            "From a row's insert to its prediction (async)",
            LAG_BUCKETS,
        )

    def inc(self, name: str, by: int = 1) -> None:
        with self._lock:
            self.counters[name] += by

    def observe_dispatch(self, seconds: float) -> None:
        with self._lock:
            self._dispatch.observe(max(0.0, seconds))

    def observe_scoring(self, scored: int, lags: list[float], failed: int) -> None:
        """One async batch: rows scored, their insert-to-commit lags, rows that failed."""
        with self._lock:
            self.rows_scored += scored
            self.rows_failed += failed
            for seconds in lags:
                self._lag.observe(seconds)

    def render(self) -> str:
        def scalar(name: str, kind: str, value: int, help_text: str) -> list[str]:
            return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"]

        with self._lock:
            out: list[str] = []
            for name, help_text in COUNTERS.items():
                out += scalar(
                    f"mlmanager_jobs_{name}_total", "counter", self.counters[name], help_text
                )
            out += scalar(
                "mlmanager_queue_depth", "gauge", self.queue_depth, "PENDING jobs in the ledger"
            )
            out += scalar(
                "mlmanager_worker_running_jobs",
                "gauge",
                self.running,
                "Jobs running on this worker",
            )
            out += scalar(
                "mlmanager_worker_database_up", "gauge", self.database_up, "1 while the DB answers"
            )
            out += self._dispatch.render()
            out += scalar(
                "mlmanager_async_rows_scored_total",
                "counter",
                self.rows_scored,
                "Rows scored (async)",
            )
            out += scalar(
                "mlmanager_async_rows_failed_total",
                "counter",
                self.rows_failed,
                "Rows the model refused",
            )
            out += self._lag.render()
            return "\n".join(out) + "\n"
