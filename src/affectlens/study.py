"""Studies: a YAML file names models, stimuli and stages; ``run_study`` runs what is missing, then compares,
analyzes and reports. ``affectlens demo`` is the built-in study of the two bundled models.

Layout of a study folder::

    OUT/<label>/elicit/       one elicitation run per model
    OUT/<label>/likelihood/   one likelihood run per model
    OUT/<label>/vectors/      emotion vectors (when the stage is asked for)
    OUT/comparison/           encoders against the first model's emitted faces
    OUT/analysis/             analysis.json and figures
    OUT/report/               report.html and report.md
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from affectlens.errors import AffectlensError

Stage = Literal["elicit", "likelihood", "vectors", "compare", "analyze", "report"]
ALL_STAGES: tuple[str, ...] = ("elicit", "likelihood", "vectors", "compare", "analyze", "report")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelEntry(_Strict):
    spec: str
    label: str | None = None
    primed: bool = False
    suppress: list[str] = Field(default_factory=list)
    dtype: str | None = None
    device: str | None = None

    @property
    def name(self) -> str:
        return self.label or re.sub(r"[^A-Za-z0-9._-]+", "_", Path(self.spec).name)


class ElicitSettings(_Strict):
    samples: int = Field(8, ge=1)
    prompts_per_cell: int | None = Field(None, ge=1, description="elicit on a balanced subset of prompts")
    temperature: float = Field(1.0, ge=0)
    max_new_tokens: int = Field(24, ge=1)
    batch_prompts: int = Field(32, ge=1)


class LikelihoodSettings(_Strict):
    faces: str = "catalogue"
    prompts_per_cell: int | None = Field(None, ge=1, description="score a balanced subset of prompts")


class AnalysisSettings(_Strict):
    n_permutations: int = Field(1000, ge=0)
    n_boot: int = Field(1000, ge=0)
    floor: int = Field(3, ge=1)
    layer: int | None = None


class Study(_Strict):
    name: str = "study"
    out: str
    prompts: str | None = None
    seed: int = 0
    models: list[ModelEntry] = Field(min_length=1)
    stages: list[Stage] = Field(
        default_factory=lambda: ["elicit", "likelihood", "compare", "analyze", "report"]
    )
    elicit: ElicitSettings = Field(default_factory=ElicitSettings)
    likelihood: LikelihoodSettings = Field(default_factory=LikelihoodSettings)
    analysis: AnalysisSettings = Field(default_factory=AnalysisSettings)

    @field_validator("models")
    @classmethod
    def _unique_labels(cls, models: list[ModelEntry]) -> list[ModelEntry]:
        names = [m.name for m in models]
        if len(set(names)) != len(names):
            raise ValueError(f"model labels must be unique, got {names}; set 'label' for each model")
        return models


def load_study(path: str | Path) -> Study:
    """Read and validate a study file; errors name the file and the field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AffectlensError(f"{path}: no such file") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise AffectlensError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return parse_study(data, str(path))


def parse_study(data: Any, where: str = "study") -> Study:
    if not isinstance(data, dict):
        raise AffectlensError(f"{where}: expected a mapping of study fields")
    try:
        return Study.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "(top level)"
        raise AffectlensError(f"{where}: field {field!r}: {error['msg']}") from None


def demo_study(out: str = "runs/demo") -> Study:
    """The built-in study: both bundled models on a balanced subset (6 prompts per cell x 4 samples; likelihood of
    the whole catalogue after 2 prompts per cell), sized for a 2-core CPU. ``affectlens study`` runs full sets."""
    return Study(
        name="affectlens demo",
        out=out,
        models=[
            ModelEntry(spec="smollm2-135m", label="smollm2", primed=True),
            ModelEntry(spec="gemma3-270m", label="gemma3", primed=True),
        ],
        elicit=ElicitSettings(samples=4, prompts_per_cell=6),
        likelihood=LikelihoodSettings(prompts_per_cell=2),
        analysis=AnalysisSettings(n_permutations=200, n_boot=500),
    )


def run_study(study: Study, *, quiet: bool = False, log=print) -> dict[str, Any]:
    """Run every missing stage of ``study`` (finished work is skipped), then compare, analyze and report."""
    from affectlens.runtime.loading import load_model
    from affectlens.stages.elicit import ElicitConfig, elicit
    from affectlens.stages.likelihood import LikelihoodConfig, likelihood
    from affectlens.stimuli import PromptSet, load_catalogue, load_prompts

    root = Path(study.out)
    prompts = load_prompts(study.prompts)
    timings: dict[str, float] = {}
    elicit_runs, likelihood_runs, vector_runs = [], [], []
    for entry in study.models:
        folder = root / entry.name
        handle = None
        for stage in ("elicit", "likelihood", "vectors"):
            if stage not in study.stages:
                continue
            started = time.perf_counter()
            if handle is None:
                log(f"loading {entry.spec}")
                handle = load_model(entry.spec, dtype=entry.dtype, device=entry.device)
            if stage == "elicit":
                config = ElicitConfig(
                    samples=study.elicit.samples,
                    temperature=study.elicit.temperature,
                    max_new_tokens=study.elicit.max_new_tokens,
                    seed=study.seed,
                    primed=entry.primed,
                    suppress=tuple(entry.suppress),
                    batch_prompts=study.elicit.batch_prompts,
                )
                subset = _balanced(prompts, study.elicit.prompts_per_cell)
                summary = elicit(
                    handle,
                    str(folder / "elicit"),
                    PromptSet(subset, *_subset_id(prompts, subset)),
                    config,
                    quiet=quiet,
                )
                log(f"{entry.name}: face rate {summary['face_rate']:.3f} over {summary['n_samples']} samples")
                elicit_runs.append(str(folder / "elicit"))
            elif stage == "likelihood":
                subset = _balanced(prompts, study.likelihood.prompts_per_cell)
                faces = (
                    load_catalogue()
                    if study.likelihood.faces == "catalogue"
                    else load_catalogue(study.likelihood.faces)
                )
                likelihood(
                    handle,
                    str(folder / "likelihood"),
                    faces,
                    PromptSet(subset, *_subset_id(prompts, subset)),
                    LikelihoodConfig(primed=entry.primed),
                    faces_source=study.likelihood.faces,
                    quiet=quiet,
                )
                likelihood_runs.append(str(folder / "likelihood"))
            else:
                from affectlens.stages.vectors import vectors

                vectors(handle, str(folder / "vectors"), quiet=quiet)
                vector_runs.append(str(folder / "vectors"))
            timings[f"{entry.name}/{stage}"] = round(time.perf_counter() - started, 1)
        del handle
    result: dict[str, Any] = {
        "timings": timings,
        "elicit_runs": elicit_runs,
        "likelihood_runs": likelihood_runs,
        "vector_runs": vector_runs,
    }
    settings = study.analysis
    if "compare" in study.stages and elicit_runs and (likelihood_runs or len(elicit_runs) > 1):
        from affectlens.analysis.encoders import compare

        started = time.perf_counter()
        result["comparison"] = compare(
            elicit_runs[0],
            likelihood_runs + elicit_runs[1:],
            str(root / "comparison"),
            floor=1,
            n_boot=settings.n_boot,
            seed=study.seed,
        )
        timings["compare"] = round(time.perf_counter() - started, 1)
    if "analyze" in study.stages and elicit_runs:
        from affectlens.analysis.kaomoji import analyze

        started = time.perf_counter()
        analyze(
            elicit_runs,
            str(root / "analysis"),
            n_permutations=settings.n_permutations,
            n_boot=settings.n_boot,
            seed=study.seed,
            layer=settings.layer,
            floor=settings.floor,
            quiet=quiet,
        )
        timings["analyze"] = round(time.perf_counter() - started, 1)
    if vector_runs:
        from affectlens.analysis.emotions import analyze_vectors

        for run, entry in zip(vector_runs, study.models, strict=False):
            bridge = str(root / entry.name / "elicit") if elicit_runs else None
            analyze_vectors(
                run,
                str(Path(run) / "analysis"),
                n_permutations=settings.n_permutations,
                n_boot=settings.n_boot,
                seed=study.seed,
                elicitation_run=bridge,
            )
    if "report" in study.stages:
        from affectlens.report.build import build_report

        result["report"] = str(build_report(root, title=study.name, timings=timings))
    return result


def _balanced(prompts, per_cell: int | None) -> tuple:
    if per_cell is None:
        return tuple(prompts)
    taken: dict[str, int] = {}
    chosen = []
    for prompt in prompts:
        if taken.get(prompt.cell, 0) < per_cell:
            taken[prompt.cell] = taken.get(prompt.cell, 0) + 1
            chosen.append(prompt)
    return tuple(chosen)


def _subset_id(prompts, subset: tuple) -> tuple[str, str]:
    from dataclasses import asdict

    from affectlens.stimuli import content_hash

    if len(subset) == len(prompts):
        return prompts.hash, prompts.source
    return content_hash(asdict(p) for p in subset), f"{prompts.source} (balanced subset of {len(subset)})"
