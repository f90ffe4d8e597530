"""Runs every ufl benchmark in turn and prints each one's JSON line (``make bench``).

Each benchmark is a script in this folder that prints one JSON line of figures and ratios against the peers
it measures in the same run. Benchmarks never gate CI; this runner only collects their lines, one after the
other so that they do not compete for the two cores. ``--only NAME`` runs a subset; ``--out FILE`` also
appends the lines to a JSON-lines file.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

#: In the order they run: cheap ones first.
BENCHMARKS = (
    "sparse_coding_inference",
    "preprocess",
    "serving",
    "encode_images",
    "dictionary_learning",
    "train_loop_overhead",
    "autoencoder_throughput",
    "presets",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", choices=BENCHMARKS, help="benchmarks to run (default: all)")
    parser.add_argument("--out", help="append each JSON line to this file")
    args = parser.parse_args()
    failed = []
    for name in args.only or BENCHMARKS:
        script = os.path.join(HERE, f"{name}.py")
        if not os.path.exists(script):
            print(f"# {name}: no benchmarks/{name}.py, skipped", file=sys.stderr)
            continue
        print(f"# {name}: running {script}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        result = subprocess.run([sys.executable, script], stdout=subprocess.PIPE, text=True)
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        if result.returncode != 0 or not lines:
            failed.append(name)
            print(f"# {name}: failed (exit {result.returncode})", file=sys.stderr)
            continue
        record = json.loads(lines[-1])
        record.setdefault("benchmark", name)
        record["benchmark_seconds"] = round(time.perf_counter() - start, 1)
        line = json.dumps(record, sort_keys=True)
        print(line, flush=True)
        if args.out:
            with open(args.out, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")
    if failed:
        print("# failed: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
