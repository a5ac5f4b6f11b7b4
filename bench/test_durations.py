"""Where `make test`'s minutes go: a pytest JUnit XML file → a Markdown table per test file
(tests, tier, seconds with setup and teardown, the share of the sum) and the slowest tests.

    make test PYTEST_ARGS="--junitxml=/tmp/junit.xml"
    python bench/test_durations.py /tmp/junit.xml --wall 1234 > table.md

With xdist the files run side by side, so the seconds add up to more than the wall time;
`--wall` (the run's own seconds) adds that line. pytest writes setup + call + teardown into each
test's `time` (junit_duration_report=total), so a module fixture is paid by the file's first test.
"""
from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def tiers_by_test(repo: Path) -> dict[str, str]:
    """{'tests/test_x.py::name[param]': tier} from pytest's own collection (conftest's marks)."""
    tiers: dict[str, str] = {}
    for tier in ("fast", "integration", "jvm"):
        proc = subprocess.run([sys.executable, "-m", "pytest", "--co", "-q", "-m", tier,
                               "-p", "no:cacheprovider"], cwd=repo, capture_output=True, text=True)
        for line in proc.stdout.splitlines():
            if "::" in line:
                tiers.setdefault(line.strip(), tier)
    return tiers


def read(path: Path) -> list[tuple[str, str, float, str]]:
    """[(file, test, seconds, outcome)] of every test case in the JUnit file."""
    rows = []
    for case in ET.parse(path).iter("testcase"):
        module = case.get("classname", "")       # "tests.test_x" (or "tests.test_x.TestClass")
        parts = module.split(".")
        file = "/".join(parts[:2]) + ".py" if len(parts) >= 2 else module
        outcome = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
        rows.append((file, case.get("name", ""), float(case.get("time", 0.0)), outcome))
    return rows


def table(rows, tiers: dict[str, str], wall: float | None, top: int) -> str:
    per_file: dict[str, list] = collections.defaultdict(lambda: [0, 0.0, collections.Counter()])
    for file, name, seconds, _ in rows:
        entry = per_file[file]
        entry[0] += 1
        entry[1] += seconds
        entry[2][tiers.get(f"{file}::{name}", "?")] += 1
    total = sum(e[1] for e in per_file.values())
    out = ["| test file | tests | tiers | seconds | share |", "|---|---|---|---|---|"]
    for file, (count, seconds, tier_count) in sorted(per_file.items(), key=lambda kv: -kv[1][1]):
        mix = ", ".join(f"{t} {n}" for t, n in sorted(tier_count.items()))
        out.append(f"| {file} | {count} | {mix} | {seconds:.0f} | {100 * seconds / total:.1f}% |")
    out.append(f"| **sum** | {len(rows)} | | {total:.0f} | |")
    if wall:
        out.append(f"| **wall** (the run) | | | {wall:.0f} | sum ÷ wall {total / wall:.2f} |")
    out += ["", f"Slowest {top} tests (setup and teardown included):", "",
            "| test | seconds | outcome |", "|---|---|---|"]
    for file, name, seconds, outcome in sorted(rows, key=lambda r: -r[2])[:top]:
        out.append(f"| {file}::{name} | {seconds:.0f} | {outcome} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("junit", type=Path)
    ap.add_argument("--wall", type=float, help="the run's wall seconds")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--no-tiers", action="store_true", help="skip the collection of the tiers")
    args = ap.parse_args(argv)
    if not args.junit.is_file():
        print(f"test_durations: {args.junit}: no such file", file=sys.stderr)
        return 2
    tiers = {} if args.no_tiers else tiers_by_test(Path(__file__).resolve().parent.parent)
    print(table(read(args.junit), tiers, args.wall, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
