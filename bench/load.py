"""Benchmark: load_model on a bundled alias, cold (GGUF dequantized) against warm (safetensors cache).

Each load runs in a fresh process, as a user's would: "cold" with an empty temporary cache, "warm" with the
cache that the cold load wrote. The time of load_model itself is printed apart from the process's import time.

    python bench/load.py [--model smollm2-135m]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

CHILD = """
import time
t0 = time.perf_counter()
import affectlens, transformers.models.auto  # noqa: E401
t1 = time.perf_counter()
affectlens.load_model({spec!r})
t2 = time.perf_counter()
print(f"{{t1 - t0:.2f}} {{t2 - t1:.2f}}")
"""


def timed_load(spec: str, cache: str) -> tuple[float, float]:
    env = {**os.environ, "AFFECTLENS_CACHE": cache}
    out = subprocess.run(
        [sys.executable, "-c", CHILD.format(spec=spec)], env=env, capture_output=True, text=True, check=True
    )
    imports, load = out.stdout.split()[-2:]
    return float(imports), float(load)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--warm-runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        imports, cold = timed_load(args.model, cache)
        warm = [timed_load(args.model, cache)[1] for _ in range(args.warm_runs)]
    best = min(warm)
    print(f"{args.model}: imports {imports:.1f} s (once per process)")
    print(f"cold load_model (GGUF dequantized, cache written): {cold:6.1f} s")
    print(
        f"warm load_model (safetensors cache), best of {len(warm)}: {best:6.1f} s  "
        f"[{', '.join(f'{w:.1f}' for w in warm)}]"
    )
    print(f"speed-up: {cold / best:.1f}x")


if __name__ == "__main__":
    main()
