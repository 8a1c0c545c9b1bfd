"""Scale-out: a study's (model x stage x shard) jobs on the local executor and on Ray write the same bytes, a
worker killed mid-shard and a driver killed mid-study lose nothing, and bad requests fail in one line.

One local Ray cluster (2 CPUs, no dashboard) serves the module; models are tiny random ones saved as folders
(so that Ray workers, other processes, load them by spec); workers ask for half a CPU so that three fit. The
executors are called directly (``run_local``, ``run_ray``), skipping the driver's analyses, except where the
CLI is the point.

"Byte for byte": every Parquet and safetensors file is compared as bytes (the store sorts the safetensors
header, whose metadata safetensors writes in an order that changes from one process to the next).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import tiny_model
from typer.testing import CliRunner

from affectlens.errors import AffectlensError
from affectlens.study import executors as executors_module
from affectlens.study import parse_study, run_study
from affectlens.study.worker import ModelWorker, check_storage

ray = pytest.importorskip("ray")

FACES = ["(^▽^)", "(╥﹏╥)", "(・_・)", "(ﾟДﾟ)", "(￣ー￣)"]
# 18 prompts in 9 elicitation shards (batches of 2), 9 likelihood shards (one prompt each).
SETTINGS = {
    "elicit": {"samples": 2, "prompts_per_cell": 2, "batch_prompts": 2, "max_new_tokens": 8},
    "likelihood": {"prompts_per_cell": 1},
}


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def folders(tokenizer, tmp_path_factory):
    """Two tiny random models of different families, saved with the tiny tokenizer: specs any process loads."""
    root = tmp_path_factory.mktemp("tiny-models")
    out = {}
    for name, family, seed in (("a", "llama", 0), ("b", "qwen2", 1)):
        folder = root / name
        tiny_model(family, seed, vocab_size=len(tokenizer), max_position_embeddings=1024).save_pretrained(
            folder
        )
        tokenizer.save_pretrained(folder)
        out[name] = folder
    faces = root / "faces.txt"
    faces.write_text("\n".join(FACES) + "\n", encoding="utf-8")
    out["faces"] = faces
    return out


def study_data(out: Path, folders, *, stages=("elicit", "likelihood"), workers=(2, 1), **extra) -> dict:
    models = [
        {
            "spec": str(folders[name]),
            "label": name,
            "primed": True,
            "workers": n,
            "resources": {"num_cpus": 0.5},
        }
        for name, n in zip("ab", workers, strict=False)
    ]
    likelihood = SETTINGS["likelihood"] | {"faces": str(folders["faces"])}
    return {"out": str(out), "models": models, "stages": list(stages), "elicit": SETTINGS["elicit"],
            "likelihood": likelihood, **extra}  # fmt: skip


def outputs(root: Path) -> dict[str, object]:
    """Every table and tensor file under a study folder (run files and parts), by relative path."""
    found: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix in (".parquet", ".safetensors"):
            found[str(path.relative_to(root))] = path.read_bytes()
    return found


def assert_same_outputs(left: Path, right: Path) -> None:
    a, b = outputs(left), outputs(right)
    assert sorted(a) == sorted(b)
    assert [k for k in a if a[k] != b[k]] == []


def execute(data: dict, executor: str = "ray") -> dict[tuple[str, str], dict]:
    """The study's model stages on one executor; the summaries by (model, stage)."""
    summaries: dict[tuple[str, str], dict] = {}

    def on_done(model: str, stage: str, summary: dict, _seconds: float) -> None:
        summaries[(model, stage)] = summary

    study, quiet = parse_study(data), {"quiet": True, "log": lambda _: None, "on_done": on_done}
    if executor == "ray":
        executors_module.run_ray(study, address=None, **quiet)
    else:
        executors_module.run_local(study, **quiet)
    return summaries


@pytest.fixture(scope="module")
def local_run(folders, tmp_path_factory):
    """The reference: the study's three model stages on the local executor, in this process."""
    root = tmp_path_factory.mktemp("local") / "study"
    execute(study_data(root, folders, stages=("elicit", "likelihood", "vectors")), "local")
    return root


class Bars:
    """Records the driver's progress view: (total, completed) by bar."""

    def __init__(self) -> None:
        self.tasks: dict[str, list[int]] = {}

    def add_task(self, description: str, total: int, completed: int = 0) -> str:
        self.tasks[description] = [total, completed]
        return description

    def advance(self, task: str, steps: int) -> None:
        self.tasks[task][1] += steps


def test_ray_writes_the_same_bytes_as_the_local_executor(cluster, folders, local_run, tmp_path, monkeypatch):
    bars = Bars()
    monkeypatch.setattr(executors_module, "progress", lambda quiet: contextlib.nullcontext(bars))
    root = tmp_path / "study"
    stages = ("elicit", "likelihood", "vectors")
    summaries = execute(study_data(root, folders, stages=stages))
    assert_same_outputs(local_run, root)
    # One bar per (model, stage) on the driver, advanced shard by shard to its total.
    assert sorted(bars.tasks) == sorted(f"{stage} {model}" for model in "ab" for stage in stages)
    assert all(total == done > 0 for total, done in bars.tasks.values())
    assert summaries[("a", "elicit")]["n_samples"] == 36 and summaries[("b", "vectors")]["n_stories"] == 240
    n_parts = len(list((root / "a" / "elicit" / "parts" / "elicit").glob("*.json")))
    assert n_parts == 9  # the shards were planned once, as the local run planned them


def test_the_shard_layout_never_changes_a_result(folders, local_run, tmp_path):
    """Two copies of a model deal one stage's groups out backwards and alternately: the same files."""
    study = parse_study(study_data(tmp_path / "study", folders))
    first, second = ModelWorker(study, "a"), ModelWorker(study, "a")
    for stage in ("elicit", "likelihood"):
        plan = first.schedule(stage)
        for i, group in enumerate(reversed(plan.groups)):
            (first, second)[i % 2].compute(stage, group)
        second.complete(stage, 1.0, plan.pending)
    left, right = outputs(local_run / "a"), outputs(tmp_path / "study" / "a")
    assert sorted(right) == sorted(k for k in left if not k.startswith("vectors"))
    assert [k for k in right if right[k] != left[k]] == []


def _compute_workers() -> list[int]:
    """Pids of study workers that are computing a shard right now (Ray titles the process by the call)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info["cmdline"] or [""]
        if cmdline and cmdline[0].startswith("ray::ModelWorker.compute"):
            found.append(proc.info["pid"])
    return found


def test_a_worker_killed_mid_shard_is_retried_and_nothing_is_lost(cluster, folders, local_run, tmp_path):
    root = tmp_path / "study"
    killed: list[int] = []
    stop = threading.Event()

    def killer() -> None:
        while not stop.is_set() and not killed:
            for pid in _compute_workers():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                break
            time.sleep(0.002)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        execute(study_data(root, folders, stages=("elicit",), workers=(2,)))
    finally:
        stop.set()
        thread.join()
    assert killed, "no worker was caught computing a shard"
    assert_same_outputs(local_run / "a" / "elicit", root / "a" / "elicit")
    generations = pd.read_parquet(root / "a" / "elicit" / "generations.parquet")
    assert not generations.duplicated(["prompt_id", "sample"]).any() and len(generations) == 36


def test_a_killed_driver_resumes_from_the_parts_on_disk(cluster, folders, local_run, tmp_path):
    root = tmp_path / "study"
    path = tmp_path / "study.yaml"
    data = study_data(root, folders, stages=("elicit",), workers=(1,))
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    command = [sys.executable, "-m", "affectlens.cli", "study", str(path), "--executor", "ray",
               "--address", cluster, "--quiet"]  # fmt: skip
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = root / "a" / "elicit" / "parts" / "elicit"
    deadline = time.monotonic() + 120
    while driver.poll() is None and len(list(parts.glob("*.json"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    kept = {p: p.stat().st_mtime_ns for p in parts.glob("*.json")}
    assert 2 <= len(kept) < 9, f"the driver was killed after {len(kept)} of 9 shards"
    execute(data)
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # resumed: those shards were not computed again
    assert len(list(parts.glob("*.json"))) == 9
    assert_same_outputs(local_run / "a" / "elicit", root / "a" / "elicit")


def test_a_gpu_request_on_a_cpu_cluster_is_one_line_before_anything_runs(cluster, folders, tmp_path):
    data = study_data(tmp_path / "study", folders)
    data["models"][1]["resources"] = {"num_gpus": 1}
    with pytest.raises(AffectlensError) as caught:
        run_study(parse_study(data), executor="ray", quiet=True, log=lambda _: None)
    message = str(caught.value)
    assert "\n" not in message and "'b' asks for num_gpus: 1 per worker" in message and "GPU" in message
    assert not (tmp_path / "study").exists()  # nothing was submitted, nothing written


def test_a_worker_that_does_not_see_the_study_folder_is_refused(cluster, folders, tmp_path, monkeypatch):
    # The driver writes its probe under another name, as if the workers' filesystem were not the driver's.
    monkeypatch.setattr(executors_module, "PROBE", ".elsewhere-")
    with pytest.raises(AffectlensError) as caught:
        execute(study_data(tmp_path / "study", folders, workers=(1,)))
    message = str(caught.value)
    assert "\n" not in message and message.startswith("node ") and str(tmp_path / "study") in message
    assert "filesystem every node shares" in message


def test_a_worker_that_cannot_write_is_refused(tmp_path, monkeypatch):
    (tmp_path / ".affectlens-probe-t").write_text("t", encoding="utf-8")
    real = Path.write_text

    def refuse(self, *args, **kwargs):
        if self.name.startswith(".affectlens-probe-t-"):
            raise PermissionError(13, "Permission denied")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", refuse)
    with pytest.raises(
        AffectlensError, match=r"^node \S+ cannot write to the study folder .*Permission denied"
    ):
        check_storage(tmp_path, "t")


def test_executor_errors_are_one_line(folders, tmp_path, monkeypatch):
    study = parse_study(study_data(tmp_path / "study", folders))
    with pytest.raises(AffectlensError, match="unknown executor 'slurm'"):
        run_study(study, executor="slurm")
    with pytest.raises(AffectlensError, match="needs --executor ray"):
        run_study(study, address="auto")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study_data(tmp_path / "study", folders)), encoding="utf-8")
    from affectlens.cli import app

    result = CliRunner().invoke(app, ["study", str(path), "--executor", "ray"])
    assert result.exit_code == 2
    assert "needs Ray, which is not installed: pip install 'affectlens[ray]'" in result.output
    assert not (tmp_path / "study").exists()


def test_resources_and_workers_are_validated(tmp_path):
    study = parse_study({"out": "x", "models": [{"spec": "m", "workers": 2,
                                                 "resources": {"num_gpus": 1, "memory": "16GiB"}}]})  # fmt: skip
    assert study.models[0].resources.ray_options() == {"num_gpus": 1, "num_cpus": 1, "memory": 16 * 2**30}
    with pytest.raises(AffectlensError, match=r"models\.0\.workers"):
        parse_study({"out": "x", "models": [{"spec": "m", "workers": 0}]})
    with pytest.raises(AffectlensError, match=r"models\.0\.resources\.gpus"):
        parse_study({"out": "x", "models": [{"spec": "m", "resources": {"gpus": 1}}]})


@pytest.mark.slow
def test_smollm2_on_ray_equals_the_local_executor(cluster, tmp_path):
    """The bundled SmolLM2, one prompt per cell: two Ray workers against the local executor, byte for byte."""
    import torch

    from affectlens.stimuli import load_catalogue

    model = {
        "spec": "smollm2-135m",
        "label": "smollm2",
        "primed": True,
        "workers": 2,
        "resources": {"num_cpus": 1},
    }
    faces = tmp_path / "faces.txt"
    faces.write_text("\n".join(load_catalogue()[:30]) + "\n", encoding="utf-8")
    data = {
        "models": [model],
        "stages": ["elicit", "likelihood"],
        "elicit": {"samples": 2, "prompts_per_cell": 1, "batch_prompts": 3},
        "likelihood": {"prompts_per_cell": 1, "faces": str(faces)},
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each Ray worker (num_cpus 1): CPU kernels round by thread count
    try:
        execute(data | {"out": str(tmp_path / "local")}, "local")
    finally:
        torch.set_num_threads(threads)
    execute(data | {"out": str(tmp_path / "ray")})
    assert_same_outputs(tmp_path / "local", tmp_path / "ray")


def test_a_cross_model_wait_that_could_deadlock_is_refused(cluster, folders, tmp_path):
    # b's likelihood scores a's emitted faces; with 4 workers of a CPU each on a 2-CPU cluster, b's workers
    # could hold the CPUs while waiting for a, which could then never start.
    data = study_data(tmp_path / "study", folders, workers=(2, 2))
    data["likelihood"]["faces"] = str(tmp_path / "study" / "a" / "elicit")
    for model in data["models"]:
        model["resources"] = {"num_cpus": 1}
    with pytest.raises(AffectlensError) as caught:
        run_study(parse_study(data), executor="ray", quiet=True, log=lambda _: None)
    message = str(caught.value)
    assert "\n" not in message and "every model's workers must fit at once" in message and "4 CPU" in message
