"""The study file's schema: models (with the Ray resources each one's workers ask for), stimuli, stages and
their settings; ``load_study`` and ``parse_study`` turn YAML into a validated :class:`Study`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ByteSize, ConfigDict, Field, ValidationError, field_validator, model_validator

from affectlens.config import (
    DEFAULT_INSTRUCTION,
    AnalysisConfig,
    ElicitConfig,
    LikelihoodConfig,
    nested_validation,
    one_line,
)
from affectlens.errors import AffectlensError

Stage = Literal["elicit", "likelihood", "vectors", "compare", "analyze", "report"]
MODEL_STAGES = ("elicit", "likelihood", "vectors")  # the stages that load a model; the rest read run folders


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Resources(_Strict):
    """What one worker of a model asks Ray for (``--executor ray``; the local executor ignores it)."""

    num_gpus: float = Field(0, ge=0, description="GPUs per worker (fractions share a GPU)")
    num_cpus: float = Field(1, gt=0, description="CPUs per worker; torch uses this many threads (at least 1)")
    memory: ByteSize | None = Field(None, description="RAM per worker: bytes, or '16GB', '16GiB'")

    def ray_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"num_gpus": self.num_gpus, "num_cpus": self.num_cpus}
        if self.memory is not None:
            options["memory"] = int(self.memory)
        return options


class ModelEntry(_Strict):
    spec: str
    label: str | None = None
    primed: bool = False
    suppress: list[str] = Field(default_factory=list)
    dtype: str | None = None
    device: str | None = None
    resources: Resources = Field(default_factory=Resources)
    workers: int = Field(1, ge=1, description="replicas of this model's Ray actor, each serving shards")

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

    def model(self, name: str) -> ModelEntry:
        return next(m for m in self.models if m.name == name)

    def model_stages(self) -> list[str]:
        """The stages that load a model, in the order they run for each model."""
        return [stage for stage in MODEL_STAGES if stage in self.stages]


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
