"""Benchmark: corpus ingest against the floor of reading the same transcript, in one run.

A synthetic Claude Code session of N lines (default 100,000) is written once. The reference reads it and
``json.loads`` every line, which any ingest must do at least; affectlens parses it into turns (message merging,
the walk back to the user text, injected-text stripping), redacts every text field and path, reads each
turn's face and deduplicates. Rounds alternate. Prints turns per second for both and affectlens's share of
the reference's speed, and checks that ingest kept every face turn the generator wrote.

    python bench/ingest.py [--lines 100000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from affectlens.transcripts.ingest import ingest_files
from affectlens.transcripts.synthetic import generate_claude_code


def read_floor(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip() and json.loads(line))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "session.jsonl"
        turns = generate_claude_code(path, args.lines, seed=0)
        floor, ours = [], []
        for _ in range(args.rounds):
            start = time.perf_counter()
            read_floor(path)
            floor.append(time.perf_counter() - start)
            start = time.perf_counter()
            found = ingest_files([path])
            ours.append(time.perf_counter() - start)
        kept, no_face = (sum(n for k, n in found.counts.items() if k[2] == o) for o in ("kept", "no_face"))
        assert kept + no_face == turns, (kept, no_face, turns)
        best_floor, best_ours = min(floor), min(ours)
        print(
            f"{args.lines} lines, {turns} assistant turns ({kept} with a face), best of {args.rounds} rounds"
        )
        print(
            f"reference (read + json.loads every line): {best_floor:.2f} s, {turns / best_floor:,.0f} turns/s"
        )
        print(
            f"affectlens ingest (parse, redact, faces): {best_ours:.2f} s, {turns / best_ours:,.0f} turns/s"
        )
        print(f"affectlens / reference speed: {best_floor / best_ours:.3f}x")


if __name__ == "__main__":
    main()
