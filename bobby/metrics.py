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


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.queue_depth = 0
        self.running = 0
        self.database_up = 0
        self._bucket_counts = [0] * len(DISPATCH_BUCKETS)
        self._latency_sum = 0.0
        self._latency_count = 0
        self.rows_scored = 0
        self.rows_failed = 0
        self._lag_counts = [0] * len(LAG_BUCKETS)
        self._lag_sum = 0.0
        self._lag_count = 0

    def inc(self, name: str, by: int = 1) -> None:
        with self._lock:
            self.counters[name] += by

    def observe_dispatch(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        with self._lock:
            i = bisect.bisect_left(DISPATCH_BUCKETS, seconds)
            if i < len(self._bucket_counts):
                self._bucket_counts[i] += 1
            self._latency_sum += seconds
            self._latency_count += 1

    def observe_scoring(self, scored: int, lags: list[float], failed: int) -> None:
        """One async batch: rows scored, their insert-to-commit lags, rows that failed."""
        with self._lock:
            self.rows_scored += scored
            self.rows_failed += failed
            for seconds in lags:
                i = bisect.bisect_left(LAG_BUCKETS, seconds)
                if i < len(self._lag_counts):
                    self._lag_counts[i] += 1
                self._lag_sum += seconds
                self._lag_count += 1

    def render(self) -> str:
        with self._lock:
            out: list[str] = []
            for name, help_text in COUNTERS.items():
                metric = f"mlmanager_jobs_{name}_total"
                out += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter"]
                out.append(f"{metric} {self.counters[name]}")
            for name, value, help_text in (
                ("mlmanager_queue_depth", self.queue_depth, "PENDING jobs in the ledger"),
                ("mlmanager_worker_running_jobs", self.running, "Jobs running on this worker"),
                ("mlmanager_worker_database_up", self.database_up, "1 while the DB answers"),
            ):
                out += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value}"]
            metric = "mlmanager_dispatch_latency_seconds"
            out += [
                f"# HELP {metric} From runnable to RUNNING",
                f"# TYPE {metric} histogram",
            ]
            cumulative = 0
            for bound, count in zip(DISPATCH_BUCKETS, self._bucket_counts, strict=True):
                cumulative += count
                out.append(f'{metric}_bucket{{le="{bound}"}} {cumulative}')
            out.append(f'{metric}_bucket{{le="+Inf"}} {self._latency_count}')
            out.append(f"{metric}_sum {self._latency_sum:.6f}")
            out.append(f"{metric}_count {self._latency_count}")
            for name, value, help_text in (
                ("mlmanager_async_rows_scored_total", self.rows_scored, "Rows scored (async)"),
                ("mlmanager_async_rows_failed_total", self.rows_failed, "Rows the model refused"),
            ):
                out += [f"# HELP {name} {help_text}", f"# TYPE {name} counter", f"{name} {value}"]
            metric = "mlmanager_async_scoring_lag_seconds"
            out += [f"# HELP {metric} From a row's insert to its prediction (async)"]
            out += [f"# TYPE {metric} histogram"]
            cumulative = 0
            for bound, count in zip(LAG_BUCKETS, self._lag_counts, strict=True):
                cumulative += count
                out.append(f'{metric}_bucket{{le="{bound}"}} {cumulative}')
            out.append(f'{metric}_bucket{{le="+Inf"}} {self._lag_count}')
            out.append(f"{metric}_sum {self._lag_sum:.6f}")
            out.append(f"{metric}_count {self._lag_count}")
            return "\n".join(out) + "\n"
