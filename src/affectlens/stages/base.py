"""The stage skeleton: validate, identity, begin, parts, merge, finish. Every stage is one of these.

A stage names its units of work by key (a prompt id, a story key, an emotion). ``run`` refuses a folder that
holds a different run, skips keys whose part is already on disk, computes the rest in groups (each group one
atomic part, so a killed run resumes where it stopped), then merges the parts into the run's files.

``run`` is three phases that an executor may also call apart, on different processes or machines that share
the run folder (``affectlens.study``): ``schedule`` (validate, begin, the pending groups), ``compute_groups``
(any subset of those groups, in any order, on any number of copies of the stage) and ``complete`` (merge,
finish). Because the groups are planned once and the parts merge by key, the run's files do not depend on who
computed which group. That holds as long as ``prepare`` and ``compute`` do not depend on which other groups a
copy was given, as for elicitation, likelihood and vectors (not for persona training, whose epochs follow one
another and which no study shards).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pandas as pd
import torch

from affectlens.errors import AffectlensError
from affectlens.progress import progress
from affectlens.runtime.loading import ModelHandle
from affectlens.runtime.providers import Provider
from affectlens.store.manifest import RunStore, part_tag


@dataclass
class Part:
    """One group's finished work: tables (by suffix) and tensors, written together as one part."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)


class Stage(ABC):
    name: ClassVar[str]

    def __init__(self, handle: ModelHandle | Provider, out: str, *, quiet: bool = False) -> None:
        self.handle = handle
        self.store = RunStore(out)
        self.quiet = quiet
        self.pending: list[str] = []  # the keys this run computes (set by ``schedule`` or ``complete``)
        self._prepared = False

    def validate(self) -> None:
        """Raise a one-line error for bad input, before the manifest is touched."""
        return None

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """What must match for a folder to resume: model, stimuli, config."""

    def manifest_extra(self) -> dict[str, Any]:
        return {"model": self.handle.describe()}

    @abstractmethod
    def keys(self) -> list[str]:
        """Every unit of work, in output order."""

    def weight(self) -> int:
        """Progress-bar steps per key (elicitation counts samples)."""
        return 1

    def prepare(self, pending: Sequence[str]) -> None:
        """Work shared by every group (a KV cache, a logits processor), done once per copy of the stage. It may
        depend on whether anything is pending, not on which keys are: a copy is prepared for its first groups."""
        return None

    @abstractmethod
    def groups(self, pending: Sequence[str]) -> list[list[str]]:
        """The pending keys, grouped into parts."""

    @abstractmethod
    def compute(self, group: list[str]) -> Part: ...

    def tag(self, group: Sequence[str]) -> str:
        return part_tag(group)

    @abstractmethod
    def merge(self, seconds: float, n_computed: int) -> dict[str, Any]:
        """Write the run's files from its parts; return the summary for the manifest."""

    def _check_precision(self) -> None:
        """An unfinished run resumes only in the dtype its parts were computed in."""
        earlier = self.store.stage(self.name)
        if not earlier or earlier.get("finished"):
            return
        was, now = (earlier.get("model") or {}).get("dtype"), self.handle.describe().get("dtype")
        if was and was != now:
            raise AffectlensError(
                f"{self.store.root} holds an unfinished {self.name!r} run computed in {was}; resuming it in {now} "
                f"would mix precisions. Use --dtype {was}, or a new --out folder."
            )

    # ------------------------------------------------------------------------------------------ the phases

    def schedule(self) -> list[list[str]] | None:
        """Validate, begin (or resume) the run, and return its pending groups; None when it had finished.

        An empty list means every part is on disk and only ``complete`` is left.
        """
        self.validate()
        self._check_precision()
        if self.store.begin(self.name, self.identity(), self.manifest_extra()):
            return None
        done = self.store.done_keys(self.name)
        self.pending = [key for key in self.keys() if key not in done]
        return self.groups(self.pending)

    def compute_groups(
        self, groups: Sequence[list[str]], report: Callable[[list[str]], None] | None = None
    ) -> None:
        """Compute ``groups`` (some or all of what ``schedule`` planned) and write each as one part.

        ``report`` is called after each part is on disk. A part written twice (a retried shard) is written
        with the same content under the same name, atomically: nothing is lost or duplicated.
        """
        if not self._prepared:
            self.prepare([key for group in groups for key in group])
            self._prepared = True
        for group in groups:
            part = self.compute(group)
            self.store.write_part(self.name, self.tag(group), group, tables=part.tables, tensors=part.tensors)
            if report is not None:
                report(group)

    def complete(self, seconds: float, pending: Sequence[str]) -> dict[str, Any]:
        """Merge every part into the run's files and finish; ``pending`` is what this run computed (its
        rates), ``seconds`` how long that took."""
        self.pending = list(pending)
        summary = self.merge(seconds, len(self.pending))
        self.store.finish(self.name, summary=summary)
        return summary

    def run(self) -> dict[str, Any]:
        groups = self.schedule()
        if groups is None:
            return self.store.stage(self.name)["summary"]
        keys, pending = self.keys(), self.pending
        started = time.perf_counter()
        self.prepare(pending)
        self._prepared = True
        step = self.weight()
        with progress(self.quiet) as bar:
            task = bar.add_task(
                f"{self.name} {self.handle.spec}",
                total=len(keys) * step,
                completed=(len(keys) - len(pending)) * step,
            )
            self.compute_groups(groups, lambda group: bar.advance(task, len(group) * step))
        return self.complete(time.perf_counter() - started, pending)
