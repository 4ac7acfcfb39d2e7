"""`make bench [BENCH=name]`: run benchmarks, print their ratios, write bench/results/<name>.json.

A benchmark is a module ``tests/bench/bench_<name>.py`` with ``run() -> dict``;
it measures the anchor named in its issue in the same run and reports ratios.
Benchmarks are never timed assertions inside the test suite.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
import time
from pathlib import Path

import tests.bench

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


def available() -> list[str]:
    return sorted(
        m.name.removeprefix("bench_")
        for m in pkgutil.iter_modules(tests.bench.__path__)
        if m.name.startswith("bench_")
    )


def main(argv: list[str]) -> int:
    names = available()
    wanted = argv or names
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        print(
            f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(names) or 'none'}"
        )
        return 2
    if not wanted:
        print("no benchmarks yet (add tests/bench/bench_<name>.py)")
        return 0
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in wanted:
        module = importlib.import_module(f"tests.bench.bench_{name}")
        started = time.time()
        result = module.run()
        result.setdefault("benchmark", name)
        result.setdefault("started_at", started)
        out = RESULTS / f"{name}.json"
        out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
