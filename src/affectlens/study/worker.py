"""One study model's worker: it loads the model once and serves that model's stages in their three phases
(schedule, compute one group, complete; see :mod:`affectlens.stages.base`).

The local executor calls a worker in-process; the Ray executor runs the same class as an actor, one or more
per model, so the driver never loads a model. A worker keeps no state that matters: a restarted actor loads
the model again on its next call, and every phase reads what it needs from the run folder.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from affectlens.config import ElicitConfig, LikelihoodConfig, VectorsConfig
from affectlens.errors import AffectlensError
from affectlens.study.model import Study

PROBE = ".affectlens-probe-"  # the driver's token file in the study folder, which every worker must read


@dataclass(frozen=True)
class Plan:
    """What ``schedule`` found: the pending groups (None: the stage had finished) and the progress totals."""

    groups: list[list[str]] | None
    pending: list[str]
    total: int = 0
    completed: int = 0
    summary: dict[str, Any] | None = None


def stage_folder(study: Study, model: str, stage: str) -> Path:
    return Path(study.out) / model / stage


def stage_dependencies(study: Study) -> dict[tuple[str, str], set[tuple[str, str]]]:
    """(model, stage) -> the (model, stage) jobs that must finish first.

    Only one exists: a likelihood whose faces are an elicitation run of this study scores that run's emitted
    faces, so it waits for it. Otherwise the stages of a model, and the models, are independent.
    """
    deps: dict[tuple[str, str], set[tuple[str, str]]] = {}
    faces = study.likelihood.faces
    emitter = None
    if faces != "catalogue" and "elicit" in study.stages:
        target = Path(faces).absolute()
        emitter = next(
            (m.name for m in study.models if stage_folder(study, m.name, "elicit").absolute() == target), None
        )
    for entry in study.models:
        for stage in study.model_stages():
            needs = {(emitter, "elicit")} if stage == "likelihood" and emitter else set()
            deps[(entry.name, stage)] = needs
    return deps


def node_name() -> str:
    return socket.gethostname()


def check_storage(root: Path, token: str) -> None:
    """Refuse, in one line naming this node and the path, a study folder this node cannot see or write."""
    node, where = node_name(), root.absolute()
    probe = root / f"{PROBE}{token}"
    try:
        seen = probe.read_text(encoding="utf-8")
    except OSError:
        seen = None
    if seen != token:
        raise AffectlensError(
            f"node {node} does not see the study folder {where} that the driver wrote (no {probe.name} there): "
            "run folders must be on a filesystem every node shares"
        )
    mine = root / f"{PROBE}{token}-{node}-{os.getpid()}"
    try:
        mine.write_text(node, encoding="utf-8")
        mine.unlink()
    except OSError as exc:
        raise AffectlensError(
            f"node {node} cannot write to the study folder {where} ({exc.strerror or exc}): run folders must be "
            "writable from every node"
        ) from None


class ModelWorker:
    """The loaded model of one study model entry, and its stages (built once, on first use)."""

    def __init__(self, study: Study, model: str, *, cwd: str | None = None, threads: int | None = None,
                 probe: str | None = None, device: str | None = None) -> None:  # fmt: skip
        self.study, self.entry = study, study.model(model)
        # cwd: the driver's working directory, where the study's relative paths start (Ray workers start
        # elsewhere); threads: torch threads (Ray: the worker's CPUs); probe: the storage check's token;
        # device: instead of the entry's (Ray: cpu for a worker that was given no GPU).
        self.cwd, self.threads, self.probe = cwd, threads, probe
        self.device = device or self.entry.device
        self.handle: Any = None
        self.load_seconds = 0.0
        self._stages: dict[str, Any] = {}
        self._validated: set[str] = set()
        self._prompts: Any = None

    def start(self) -> dict[str, Any]:
        """Check the storage and load the model (once; again after a restart). Returns node, pid, load time."""
        if self.handle is None:
            if self.cwd is not None:
                if not os.path.isdir(self.cwd):
                    raise AffectlensError(
                        f"node {node_name()} has no folder {self.cwd} (the driver's working directory, where the "
                        "study's relative paths start): run the study from a folder every node shares"
                    )
                os.chdir(self.cwd)
            if self.probe is not None:
                check_storage(Path(self.study.out), self.probe)
            if self.threads is not None:
                import torch

                torch.set_num_threads(self.threads)
            from affectlens.api import load_model

            started = time.perf_counter()
            self.handle = load_model(self.entry.spec, dtype=self.entry.dtype, device=self.device)
            self.load_seconds = round(time.perf_counter() - started, 1)
        return {"node": node_name(), "pid": os.getpid(), "load_seconds": self.load_seconds}

    def schedule(self, stage: str) -> Plan:
        """Begin (or resume) ``stage``; its pending groups, planned once for every worker of the model."""
        job = self._stage(stage)
        groups = job.schedule()
        self._validated.add(stage)
        if groups is None:
            return Plan(None, [], summary=job.store.stage(job.name)["summary"])
        n, step = len(job.keys()), job.weight()
        return Plan(groups, job.pending, n * step, (n - len(job.pending)) * step)

    def compute(self, stage: str, group: list[str]) -> int:
        """Compute one planned group and write it as one part; returns its progress steps."""
        job = self._ready(stage)
        job.compute_groups([group])
        return len(group) * job.weight()

    def complete(self, stage: str, seconds: float, pending: list[str]) -> dict[str, Any]:
        """Merge the parts of ``stage`` and finish it; returns the manifest's summary."""
        return self._ready(stage).complete(seconds, pending)

    # ------------------------------------------------------------------------------------------------ stages

    def _ready(self, stage: str) -> Any:
        job = self._stage(stage)
        if stage not in self._validated:
            job.validate()  # what validate derives (layers, items) is needed; begin was the planner's
            self._validated.add(stage)
        return job

    def _stage(self, stage: str) -> Any:
        if stage not in self._stages:
            self.start()
            self._stages[stage] = self._build(stage)
        return self._stages[stage]

    def _build(self, stage: str) -> Any:
        """The stage object, configured exactly as ``affectlens elicit|likelihood|vectors`` would be."""
        from affectlens.stimuli import load_prompts

        study, entry, handle = self.study, self.entry, self.handle
        folder = str(stage_folder(study, entry.name, stage))
        if self._prompts is None:
            self._prompts = load_prompts(study.prompts)
        if stage == "elicit":
            from affectlens.stages.elicit import Elicitation

            per_model = {"seed": study.seed, "instruction": study.instruction, "primed": entry.primed,
                         "suppress": tuple(entry.suppress)}  # fmt: skip
            block = study.elicit
            config = ElicitConfig(**block.model_dump(exclude={"prompts_per_cell"}) | per_model)
            return Elicitation(
                handle, folder, self._prompts.balanced(block.prompts_per_cell), config, quiet=True
            )
        if stage == "likelihood":
            from affectlens.api import face_vocabulary
            from affectlens.stages.likelihood import Likelihood

            block = study.likelihood
            config = LikelihoodConfig(
                **block.model_dump(exclude={"faces", "prompts_per_cell"})
                | {"primed": entry.primed, "instruction": study.instruction}
            )
            source = block.faces
            faces = face_vocabulary(source, config)
            subset = self._prompts.balanced(block.prompts_per_cell)
            return Likelihood(handle, folder, faces, subset, config, faces_source=source, quiet=True)
        if stage == "vectors":
            from affectlens.stages.vectors import Vectors
            from affectlens.stimuli.corpus import load_corpus

            return Vectors(handle, folder, load_corpus(), VectorsConfig(), quiet=True)
        raise AffectlensError(f"stage {stage!r} does not run on a model")
