"""Run the fault suite and print what it tried, what the app survived, and what data was lost.

    python -m tests.fault.report [--markdown FILE] [pytest args…]

Exit status: pytest's, or 1 when any data was lost.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def summarise(records: list[dict]) -> list[tuple[str, int, int, int, str]]:
    rows: dict[str, list] = defaultdict(lambda: [0, 0, 0, []])
    for rec in records:
        row = rows[rec["category"]]
        row[0] += rec["tried"]
        row[1] += rec["survived"]
        row[2] += rec["data_lost"]
        if rec["fault"] not in row[3]:
            row[3].append(rec["fault"])
    return [(cat, t, s, lost, "; ".join(faults)) for cat, (t, s, lost, faults) in rows.items()]


def table(rows) -> str:
    lines = ["| fault | tried | survived | data lost | what was done |", "|---|---:|---:|---:|---|"]
    for cat, tried, survived, lost, what in rows:
        lines.append(f"| {cat} | {tried} | {survived} | {lost} | {what} |")
    total = [sum(r[i] for r in rows) for i in (1, 2, 3)]
    lines.append(f"| **all** | **{total[0]}** | **{total[1]}** | **{total[2]}** | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args, pytest_args = parser.parse_known_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "faults.jsonl"
        env = dict(os.environ, S2S_FAULT_REPORT=str(report), QT_QPA_PLATFORM="offscreen", HF_HUB_OFFLINE="1")
        done = subprocess.run([sys.executable, "-m", "pytest", "tests/fault", "-q", "-p", "no:cacheprovider",
                               *pytest_args], cwd=ROOT, env=env)
        records = [json.loads(line) for line in report.read_text().splitlines()] if report.exists() else []
    rows = summarise(records)
    text = table(rows)
    print()
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n", encoding="utf-8")
    lost = sum(r[3] for r in rows)
    return done.returncode or (1 if lost else 0)


if __name__ == "__main__":
    sys.exit(main())
