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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from affectlens.config import (
    DEFAULT_INSTRUCTION,
    AnalysisConfig,
    ElicitConfig,
    LikelihoodConfig,
    nested_validation,
    one_line,
)
from affectlens.errors import AffectlensError
from affectlens.reporting.format import number

Stage = Literal["elicit", "likelihood", "vectors", "compare", "analyze", "report"]


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


class ElicitSettings(ElicitConfig):
    prompts_per_cell: int | None = Field(None, ge=1, description="elicit on a balanced subset of prompts")


class LikelihoodSettings(LikelihoodConfig):
    faces: str = "catalogue"
    prompts_per_cell: int | None = Field(None, ge=1, description="score a balanced subset of prompts")


# Set once for the whole study (seed, instruction) or per model (primed, suppress), never inside a stage's
# block: elicitation and likelihood must see the same prompt.
_NOT_IN_BLOCKS = {"seed", "instruction", "primed", "suppress"}


class Study(_Strict):
    name: str = "study"
    out: str
    prompts: str | None = None
    seed: int = 0
    instruction: str = DEFAULT_INSTRUCTION
    models: list[ModelEntry] = Field(min_length=1)
    stages: list[Stage] = Field(
        default_factory=lambda: ["elicit", "likelihood", "compare", "analyze", "report"]
    )
    elicit: ElicitSettings = Field(default_factory=ElicitSettings)
    likelihood: LikelihoodSettings = Field(default_factory=LikelihoodSettings)
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)

    @field_validator("models")
    @classmethod
    def _unique_labels(cls, models: list[ModelEntry]) -> list[ModelEntry]:
        names = [m.name for m in models]
        if len(set(names)) != len(names):
            raise ValueError(f"model labels must be unique, got {names}; set 'label' for each model")
        return models

    @model_validator(mode="after")
    def _settings_in_their_place(self) -> Study:
        for block in ("elicit", "likelihood", "analysis"):
            misplaced = getattr(self, block).model_fields_set & _NOT_IN_BLOCKS
            if misplaced:
                raise ValueError(
                    f"{block}: {', '.join(sorted(misplaced))} is set at the top level (seed, instruction) or per "
                    "model (primed, suppress)"
                )
        return self


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
        with nested_validation():
            return Study.model_validate(data)
    except ValidationError as exc:
        raise AffectlensError(one_line(exc, where)) from None


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
        # top-p 0.8 at temperature 1 gave the highest well-formed face rate for the weaker of the two models in
        # bench/sampling_grid.py, measured on prompts the demo never uses (see the README).
        elicit=ElicitSettings(samples=4, prompts_per_cell=6, top_p=0.8),
        likelihood=LikelihoodSettings(prompts_per_cell=2),
        analysis=AnalysisConfig(n_permutations=200, n_boot=500),
    )


def run_study(study: Study, *, quiet: bool = False, log=print) -> dict[str, Any]:
    """Run every missing stage of ``study`` (finished work is skipped), then compare, analyze and report."""
    from affectlens import api
    from affectlens.stimuli import load_prompts

    root = Path(study.out)
    prompts = load_prompts(study.prompts)
    timings: dict[str, float] = {}
    runs: dict[str, list[str]] = {"elicit": [], "likelihood": [], "vectors": []}
    for entry in study.models:
        handle = None
        for stage in ("elicit", "likelihood", "vectors"):
            if stage not in study.stages:
                continue
            started = time.perf_counter()
            if handle is None:
                log(f"loading {entry.spec}")
                handle = api.load_model(entry.spec, dtype=entry.dtype, device=entry.device)
            folder = str(root / entry.name / stage)
            per_model = {"seed": study.seed, "instruction": study.instruction, "primed": entry.primed,
                         "suppress": tuple(entry.suppress)}  # fmt: skip
            if stage == "elicit":
                block = study.elicit
                config = ElicitConfig(**block.model_dump(exclude={"prompts_per_cell"}) | per_model)
                subset = prompts.balanced(block.prompts_per_cell)
                summary = api.elicit(handle, folder, prompts=subset, config=config, quiet=quiet)
                log(
                    f"{entry.name}: opens with a bracket or emoji {number(summary['face_rate'])}; well-formed "
                    f"face {number(summary.get('well_formed_rate'))}; over {summary['n_samples']} samples"
                )
            elif stage == "likelihood":
                block = study.likelihood
                config = LikelihoodConfig(
                    **block.model_dump(exclude={"faces", "prompts_per_cell"})
                    | {"primed": entry.primed, "instruction": study.instruction}
                )
                subset = prompts.balanced(block.prompts_per_cell)
                api.likelihood(handle, folder, faces=block.faces, prompts=subset, config=config, quiet=quiet)
            else:
                api.vectors(handle, folder, quiet=quiet)
            runs[stage].append(folder)
            timings[f"{entry.name}/{stage}"] = round(time.perf_counter() - started, 1)
        del handle
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
