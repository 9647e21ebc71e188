"""Measure `split_reply` on a case set: exact new text per case, and timings.

Usage: python bench/quotes.py [CASES_DIR]   (default tests/data/quotes)

Each case is `<name>.txt` with `<name>.expected.txt` beside it; the part of
the name before the first "_" is its language or style. Prints one JSON line.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

from bridge.core.body.quotes import split_reply

DEFAULT_CASES = Path(__file__).resolve().parent.parent / "tests" / "data" / "quotes"


def squash(text: str) -> str:
    return " ".join(text.split())


def main(argv: list[str]) -> int:
    cases_dir = Path(argv[1]) if len(argv) > 1 else DEFAULT_CASES
    expected_files = sorted(cases_dir.glob("*.expected.txt"))
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    timings: list[float] = []
    exact = 0
    misses: list[str] = []
    for expected_file in expected_files:
        name = expected_file.name.removesuffix(".expected.txt")
        body = (cases_dir / f"{name}.txt").read_text(encoding="utf-8")
        started = time.perf_counter()
        result = split_reply(body)
        timings.append((time.perf_counter() - started) * 1000)
        ok = squash(result.new_text) == squash(expected_file.read_text(encoding="utf-8"))
        group = totals[name.split("_", 1)[0]]
        group[0] += 1
        group[1] += ok
        exact += ok
        if not ok:
            misses.append(name)
    count = len(expected_files)
    ordered = sorted(timings) or [0.0]
    report = {
        "cases": count,
        "exact": exact,
        "accuracy": round(exact / count, 4) if count else 0.0,
        "per_language": {
            key: {"cases": n, "exact": k, "accuracy": round(k / n, 4)}
            for key, (n, k) in sorted(totals.items())
        },
        "p50_ms": round(statistics.median(ordered), 3),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 3),
        "misses": misses,
    }
    print(json.dumps(report, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
