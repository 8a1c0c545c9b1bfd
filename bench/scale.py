"""Benchmark: a study of the two bundled models on the local executor against Ray with 2 workers, in one run.

The study: SmolLM2-135M and Gemma 3 270M, primed elicitation on ``--per-cell`` prompts per cell (``--samples``
each, batches of ``--batch-prompts``, so that a model's elicitation is several shards) and the likelihood of
the whole catalogue after ``--likelihood-per-cell`` prompts per cell (one shard per prompt).

* **local, 1 thread**: ``--executor local`` in this process, one model after the other, torch on one thread:
  the same thread count as each Ray worker, so the two runs' files can be compared byte for byte.
* **local, 2 threads**: the same on both cores, what a user of ``--executor local`` gets here.
* **Ray**: a local Ray cluster of 2 CPUs (started before the clock starts, as a running cluster would be);
  each model ``--workers`` worker(s) asking for one CPU (one torch thread each), the models side by side. Its
  time includes each worker process's imports and model load, which the local runs pay once per model too.

Prints each run's wall time, per-model stage times, the ratios, and whether Ray's tables and tensors equal
the 1-thread local run's (every Parquet and safetensors file, byte for byte). Fails when they differ. On Ray a stage's time runs from its planning
to its merge, and a model's stages are planned together, so they overlap and add up to more than the wall time.

What 2 cores can show: at most 2x over one thread, and less. Each worker process pays its own imports and model
load; two processes share one memory bus; a model's stages run one after another on its one worker, so the
two workers are busy together only while both models have shards left; and the machine may be shared (when
another job holds a core, the two workers share the other one and the ratio falls to about 1x). Against 2
threads in one process, Ray wins only what two processes gain over one process with two threads on these small
matrices. The point of the executor is many GPUs and nodes, which this machine does not have; here it checks
that the overhead is small and the output the same.

    python bench/scale.py [--per-cell 2] [--samples 4] [--batch-prompts 6] [--likelihood-per-cell 1] [--workers 1]
                          [--local-threads 1,2]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from affectlens.study import parse_study, run_study


def study_data(out: Path, args: argparse.Namespace) -> dict:
    models = [
        {"spec": spec, "label": label, "primed": True, "workers": args.workers, "resources": {"num_cpus": 1}}
        for spec, label in (("smollm2-135m", "smollm2"), ("gemma3-270m", "gemma3"))
    ]
    return {
        "name": "bench scale",
        "out": str(out),
        "models": models,
        "stages": ["elicit", "likelihood"],
        "elicit": {
            "samples": args.samples,
            "prompts_per_cell": args.per_cell,
            "batch_prompts": args.batch_prompts,
        },
        "likelihood": {"prompts_per_cell": args.likelihood_per_cell},
    }


def outputs(root: Path) -> dict[str, object]:
    """Every table and tensor file's bytes, by path under the study folder."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.suffix in (".parquet", ".safetensors")
    }


def differing(left: Path, right: Path) -> list[str]:
    a, b = outputs(left), outputs(right)
    return sorted(set(a) ^ set(b)) + [k for k in a if k in b and a[k] != b[k]]


def timed(data: dict, executor: str) -> tuple[float, dict[str, float]]:
    started = time.perf_counter()
    result = run_study(parse_study(data), executor=executor, quiet=True, log=lambda _: None)
    return time.perf_counter() - started, result["timings"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-cell", type=int, default=2, help="elicitation prompts per cell")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--batch-prompts", type=int, default=6, help="prompts per elicitation shard")
    parser.add_argument("--likelihood-per-cell", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1, help="Ray workers per model")
    parser.add_argument(
        "--local-threads", default="1,2", help="torch threads of the local runs (1 is compared)"
    )
    args = parser.parse_args()
    import ray

    n_cpus = 2
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        print(
            f"study: smollm2-135m and gemma3-270m; elicit {args.per_cell} prompts/cell x {args.samples} samples "
            f"in batches of {args.batch_prompts}; likelihood of the catalogue after {args.likelihood_per_cell} "
            f"prompt(s)/cell",
            flush=True,
        )
        default_threads = torch.get_num_threads()
        runs = {}

        def record(name: str, run: tuple[float, dict[str, float]]) -> None:
            runs[name] = run
            stages = ", ".join(f"{k} {v:.1f}" for k, v in run[1].items() if "executor" not in k)
            print(f"{name:<19}: {run[0]:6.1f} s  ({stages})", flush=True)

        for threads in sorted({1, *map(int, args.local_threads.split(","))}):
            torch.set_num_threads(threads)
            record(f"local, {threads} thread(s)", timed(study_data(work / f"local{threads}", args), "local"))
        torch.set_num_threads(default_threads)
        started = time.perf_counter()
        ray.init(num_cpus=n_cpus, include_dashboard=False, logging_level="WARNING")
        print(
            f"Ray start-up (not counted): {time.perf_counter() - started:.1f} s; {n_cpus} CPUs, 1 torch thread per worker"
        )
        try:
            record(f"Ray, {2 * args.workers} workers", timed(study_data(work / "ray", args), "ray"))
        finally:
            ray.shutdown()
        ray_s = runs[f"Ray, {2 * args.workers} workers"][0]
        for name, (wall, _) in runs.items():
            if name.startswith("local"):
                print(f"Ray speed-up over {name}: {wall / ray_s:.2f}x")
        if (work / "local2").exists():
            threads_differ = differing(work / "local1", work / "local2")
            same = "identical" if not threads_differ else f"{len(threads_differ)} files differ"
            print(f"local 1 thread vs 2 threads: {same} (CPU kernels may round differently by thread count)")
        ray_differs = differing(work / "local1", work / "ray")
        n = len(outputs(work / "ray"))
        print(f"Ray vs local (1 thread): {n - len(ray_differs)} of {n} table and tensor files equal")
        if ray_differs:
            print("differ:", ", ".join(ray_differs[:5]))
            raise SystemExit(1)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
