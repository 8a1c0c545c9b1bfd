"""Executors: who runs a study's (model x stage x shard) jobs. Both use :class:`ModelWorker` and deal out the
groups a stage planned, so a run folder does not depend on which executor wrote it.

* ``local``: in this process, one model after another, one group after another (as ``affectlens elicit``).
* ``ray``: each model's workers are Ray actors (``models[].workers`` of them, asking for
  ``models[].resources``) that load the model once and serve its shards; models run side by side. An actor
  killed mid-shard is restarted and the shard retried (parts are atomic and idempotent); a killed driver is
  resumed from the parts on disk by running the study again.

Shards are the groups a stage's ``schedule`` returns: prompt batches (elicitation), prompts (likelihood),
length buckets of stories (vectors). Progress is one bar per (model, stage) on the driver.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from affectlens.errors import AffectlensError
from affectlens.progress import progress
from affectlens.study.model import Study
from affectlens.study.worker import PROBE, ModelWorker, Plan, stage_dependencies

Key = tuple[str, str]  # (model name, stage)
Done = Callable[[str, str, dict[str, Any], float], None]  # model, stage, summary, seconds
EXECUTORS = ("local", "ray")
DEPTH = 2  # calls queued per actor: the next shard is already there when one finishes
MAX_RETRIES = 3  # restarts of a dead worker, and retries of its shards, before the study stops


def run_local(study: Study, *, quiet: bool, log: Callable[[str], None], on_done: Done) -> None:
    """Every model stage in this process: models in study order, each loaded once."""
    deps, finished = stage_dependencies(study), set()
    with progress(quiet) as bar:
        for entry in study.models:
            stages = study.model_stages()
            if not stages:
                continue
            log(f"loading {entry.spec}")
            worker = ModelWorker(study, entry.name)
            on_done(entry.name, "load", {}, worker.start()["load_seconds"])
            for stage in stages:
                if missing := deps[(entry.name, stage)] - finished:
                    other = next(iter(missing))[0]
                    raise AffectlensError(
                        f"the likelihood of {entry.name} scores the faces {other} emits, but {other} runs later: "
                        f"list {other} before {entry.name} under models"
                    )
                started = time.perf_counter()
                plan = worker.schedule(stage)
                if plan.groups is None:
                    summary = plan.summary or {}
                else:
                    task = bar.add_task(f"{stage} {entry.name}", total=plan.total, completed=plan.completed)
                    for group in plan.groups:
                        bar.advance(task, worker.compute(stage, group))
                    summary = worker.complete(stage, time.perf_counter() - started, plan.pending)
                finished.add((entry.name, stage))
                on_done(entry.name, stage, summary, time.perf_counter() - started)
            del worker  # the model's memory goes before the next one loads


# ------------------------------------------------------------------------------------------------------ Ray


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise AffectlensError(
            "--executor ray needs Ray, which is not installed: pip install 'affectlens[ray]'"
        ) from None
    return ray


def check_resources(ray: Any, study: Study, where: str) -> None:
    """Refuse, before anything is submitted, a worker that no node of the cluster could ever hold."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    total = ray.cluster_resources()
    for entry in study.models:
        for option, amount in entry.resources.ray_options().items():
            name = {"num_gpus": "GPU", "num_cpus": "CPU"}.get(option, option)
            if amount and not any(node.get(name, 0) >= amount for node in nodes):
                shown = (
                    f"{total.get(name, 0) / 2**30:.1f} GiB" if name == "memory" else f"{total.get(name, 0):g}"
                )
                raise AffectlensError(
                    f"model {entry.name!r} asks for {option}: {amount:g} per worker, but no node of the Ray cluster "
                    f"at {where} has that much ({name} in the whole cluster: {shown}); change "
                    f"models[].resources or the cluster"
                )


def check_dependencies_fit(ray: Any, study: Study) -> None:
    """A likelihood that waits for another model's elicitation holds its workers while it waits, so every
    worker of the study must fit at once, or the waiting model could keep the emitter from ever starting."""
    if not any(stage_dependencies(study).values()):
        return
    total = ray.cluster_resources()
    for option, name in (("num_gpus", "GPU"), ("num_cpus", "CPU")):
        asked = sum(e.workers * e.resources.ray_options()[option] for e in study.models)
        if asked > total.get(name, 0) + 1e-9:
            raise AffectlensError(
                f"likelihood.faces is this study's own elicitation, so on Ray every model's workers must fit at "
                f"once, but they ask for {asked:g} {name} of the cluster's {total.get(name, 0):g}; run the study "
                "with stages [elicit] first, then with likelihood, or give fewer workers"
            )


@dataclass
class _Job:
    model: str
    stage: str
    deps: set[Key]
    state: str = "waiting"  # waiting -> scheduling -> running -> completing -> done
    queue: deque[list[str]] = field(default_factory=deque)
    outstanding: int = 0
    plan: Plan | None = None
    task: int = 0
    started: float = 0.0


@dataclass
class _Model:
    name: str
    actors: list[Any]
    jobs: list[_Job]
    ready: list[int] = field(default_factory=list)
    inflight: dict[int, int] = field(default_factory=dict)
    loaded: bool = False


class RayRun:
    """The driver's event loop: schedule stages whose dependencies are done, deal their groups to ready
    workers (at most ``DEPTH`` calls queued on each), complete a stage when its last group is in."""

    def __init__(self, ray: Any, study: Study, bar: Any, log: Callable[[str], None], on_done: Done) -> None:
        self.ray, self.study, self.bar, self.log, self.on_done = ray, study, bar, log, on_done
        self.futures: dict[Any, tuple[str, _Model, _Job | None, int]] = {}
        self.models: list[_Model] = []
        self.token = uuid.uuid4().hex
        self.probe = Path(study.out) / f"{PROBE}{self.token}"

    def run(self) -> None:
        self.probe.parent.mkdir(parents=True, exist_ok=True)
        self.probe.write_text(self.token, encoding="utf-8")
        try:
            self._start()
            while any(job.state != "done" for m in self.models for job in m.jobs):
                self._pump()
                if not self.futures:  # a bug, not a user error
                    raise RuntimeError("a study job is waiting with nothing in flight")
                [ref], _ = self.ray.wait(list(self.futures), num_returns=1)
                self._handle(ref, *self.futures.pop(ref))
        finally:
            for model in self.models:
                self._release(model)
            self.probe.unlink(missing_ok=True)

    def _start(self) -> None:
        stages = self.study.model_stages()
        if not stages:
            return
        deps = stage_dependencies(self.study)
        remote = self.ray.remote(ModelWorker)
        for entry in self.study.models:
            options = entry.resources.ray_options()
            threads = max(1, int(entry.resources.num_cpus))
            # A worker that Ray gave no GPU must not pick one up by itself: Ray would not know it is in use.
            device = "cpu" if not entry.resources.num_gpus and entry.device is None else None
            actors = [
                remote.options(**options, max_restarts=MAX_RETRIES, max_task_retries=MAX_RETRIES).remote(
                    self.study, entry.name, cwd=os.getcwd(), threads=threads, probe=self.token, device=device
                )
                for _ in range(entry.workers)
            ]
            jobs = [_Job(entry.name, stage, deps[(entry.name, stage)]) for stage in stages]
            model = _Model(entry.name, actors, jobs, inflight=dict.fromkeys(range(len(actors)), 0))
            self.models.append(model)
            self.log(f"loading {entry.spec} on {entry.workers} Ray worker(s)")
            for i, actor in enumerate(actors):
                self._submit(model, None, i, "start", actor.start)

    def _submit(
        self, model: _Model, job: _Job | None, actor: int, kind: str, method: Any, *args: Any
    ) -> None:
        self.futures[method.remote(*args)] = (kind, model, job, actor)
        model.inflight[actor] += 1

    def _idlest(self, model: _Model) -> int:
        return min(model.ready, key=lambda i: model.inflight[i])

    def _pump(self) -> None:
        finished = {(m.name, job.stage) for m in self.models for job in m.jobs if job.state == "done"}
        for model in self.models:
            if not model.ready:
                continue
            for job in model.jobs:
                if job.state == "waiting" and job.deps <= finished:
                    job.state = "scheduling"
                    i = self._idlest(model)
                    self._submit(model, job, i, "schedule", model.actors[i].schedule, job.stage)
            for i in model.ready:
                while model.inflight[i] < DEPTH and (job := next((j for j in model.jobs if j.queue), None)):
                    job.outstanding += 1
                    self._submit(
                        model, job, i, "compute", model.actors[i].compute, job.stage, job.queue.popleft()
                    )
            for job in model.jobs:
                if job.state == "running" and not job.queue and not job.outstanding and job.plan is not None:
                    job.state = "completing"
                    i = self._idlest(model)
                    seconds = time.perf_counter() - job.started
                    self._submit(model, job, i, "complete", model.actors[i].complete, job.stage, seconds,
                                 job.plan.pending)  # fmt: skip
            if all(job.state == "done" for job in model.jobs):
                self._release(model)

    def _handle(self, ref: Any, kind: str, model: _Model, job: _Job | None, actor: int) -> None:
        model.inflight[actor] -= 1
        result = self._get(ref, model.name, job.stage if job else "")
        if kind == "start":
            model.ready.append(actor)
            if not model.loaded:
                model.loaded = True
                self.on_done(model.name, "load", {}, result["load_seconds"])
        elif kind == "schedule":
            assert job is not None
            plan: Plan = result
            if plan.groups is None:
                job.state = "done"
                self.on_done(job.model, job.stage, plan.summary or {}, 0.0)
                return
            job.plan, job.state, job.started = plan, "running", time.perf_counter()
            job.queue.extend(plan.groups)
            job.task = self.bar.add_task(
                f"{job.stage} {job.model}", total=plan.total, completed=plan.completed
            )
        elif kind == "compute":
            assert job is not None
            job.outstanding -= 1
            self.bar.advance(job.task, result)
        else:
            assert job is not None
            job.state = "done"
            self.on_done(job.model, job.stage, result, time.perf_counter() - job.started)

    def _get(self, ref: Any, model: str = "", stage: str = "") -> Any:
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, AffectlensError):  # a user error in a worker: its one line, not Ray's
                raise AffectlensError(str(exc.cause)) from None
            raise
        except self.ray.exceptions.RayActorError as exc:
            raise AffectlensError(
                f"a worker of model {model!r} ({stage or 'start'}) died {MAX_RETRIES + 1} times "
                f"({str(exc).splitlines()[0][:120]}); its finished shards are on disk: fix the cause and rerun"
            ) from None

    def _release(self, model: _Model) -> None:
        """Kill a model's actors once its stages are done: their GPUs go to models still waiting."""
        for actor in model.actors:
            self.ray.kill(actor)
        model.actors, model.ready = [], []
        # A worker that never got its resources is killed before it started: its start call is moot.
        for ref in [ref for ref, (_, owner, _, _) in self.futures.items() if owner is model]:
            del self.futures[ref]


def run_ray(
    study: Study, *, address: str | None, quiet: bool, log: Callable[[str], None], on_done: Done
) -> None:
    """The study's model stages on a Ray cluster: ``address`` (``ray start --head`` printed it; "auto" finds
    a local one), or a cluster started here and shut down after when None. An already initialised Ray
    (``ray.init`` in this process) is used as it is."""
    ray = import_ray()
    owned = not ray.is_initialized()
    if owned:
        try:
            extra = {} if address else {"include_dashboard": False}
            ray.init(address=address, logging_level="WARNING", **extra)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = address or "this machine (a new local cluster)"
            raise AffectlensError(
                f"cannot reach a Ray cluster at {where}: {str(exc).splitlines()[0]}"
            ) from None
    try:
        if study.model_stages():
            check_resources(ray, study, address or "this machine")
            check_dependencies_fit(ray, study)
        with progress(quiet) as bar:
            RayRun(ray, study, bar, log, on_done).run()
    finally:
        if owned:
            ray.shutdown()
