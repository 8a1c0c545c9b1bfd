"""``run_study``: the study's model stages on an executor (local or Ray), then, on the driver, the
comparison, the analyses and the report, which read run folders only."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from affectlens.errors import AffectlensError
from affectlens.reporting.format import number
from affectlens.study.executors import EXECUTORS, run_local, run_ray
from affectlens.study.model import Study


def announce(log: Callable[[str], None], model: str, stage: str, summary: dict[str, Any]) -> None:
    if stage == "elicit" and "face_rate" in summary:
        log(
            f"{model}: opens with a bracket or emoji {number(summary['face_rate'])}; well-formed "
            f"face {number(summary.get('well_formed_rate'))}; over {summary['n_samples']} samples"
        )


def run_study(study: Study, *, executor: str = "local", address: str | None = None, quiet: bool = False,
              log: Callable[[str], None] = print) -> dict[str, Any]:  # fmt: skip
    """Run every missing stage of ``study`` (finished work is skipped, unfinished work resumes from its parts),
    then compare, analyze and report.

    ``executor``: ``local`` (this process, one model at a time) or ``ray`` (each model's shards on Ray actors,
    models side by side; ``address`` names a running cluster). Both write the same run folders.
    """
    from affectlens import api

    if executor not in EXECUTORS:
        raise AffectlensError(f"unknown executor {executor!r}; use one of {', '.join(EXECUTORS)}")
    if address is not None and executor != "ray":
        raise AffectlensError("--address names a Ray cluster; it needs --executor ray")
    root = Path(study.out)
    seconds: dict[tuple[str, str], float] = {}

    def on_done(model: str, stage: str, summary: dict[str, Any], took: float) -> None:
        seconds[(model, stage)] = round(took, 1)
        announce(log, model, stage, summary)

    started = time.perf_counter()
    if executor == "ray":
        run_ray(study, address=address, quiet=quiet, log=log, on_done=on_done)
    else:
        run_local(study, quiet=quiet, log=log, on_done=on_done)
    stages = study.model_stages()
    # In study order whatever order the executor finished in, so that the report does not depend on it.
    timings = {f"{m.name}/{s}": seconds[(m.name, s)] for m in study.models for s in ("load", *stages)
               if (m.name, s) in seconds}  # fmt: skip
    if stages:
        timings[f"{executor} executor (wall)"] = round(time.perf_counter() - started, 1)
    runs = {stage: [str(root / m.name / stage) for m in study.models] if stage in stages else []
            for stage in ("elicit", "likelihood", "vectors")}  # fmt: skip
    result: dict[str, Any] = {"timings": timings, **{f"{kind}_runs": found for kind, found in runs.items()}}
    settings = study.analysis.model_copy(update={"seed": study.seed})
    elicit_runs = runs["elicit"]
    encoders = runs["likelihood"] + elicit_runs[1:]
    if "compare" in study.stages and elicit_runs and encoders:
        from affectlens.api.compare import compare

        started = time.perf_counter()
        result["comparison"] = compare(elicit_runs[0], encoders, str(root / "comparison"),
                                       floor=settings.compare_floor, n_boot=settings.n_boot, seed=settings.seed)  # fmt: skip
        timings["compare"] = round(time.perf_counter() - started, 1)
    if "analyze" in study.stages and elicit_runs:
        started = time.perf_counter()
        api.analyze(elicit_runs, root / "analysis", config=settings, quiet=quiet)
        timings["analyze"] = round(time.perf_counter() - started, 1)
    if runs["vectors"]:
        from affectlens.api.emotions import analyze_emotions

        for run, entry in zip(runs["vectors"], study.models, strict=False):
            bridge = str(root / entry.name / "elicit") if elicit_runs else None
            analyze_emotions(run, str(Path(run) / "analysis"), n_permutations=settings.n_permutations,
                             n_boot=settings.n_boot, seed=settings.seed, elicitation_run=bridge)  # fmt: skip
    if "report" in study.stages:
        result["report"] = str(api.report(root, title=study.name, timings=timings))
    return result
