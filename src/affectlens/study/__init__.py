"""Studies: a YAML file names models, stimuli and stages; ``run_study`` runs what is missing, then compares,
analyzes and reports. ``affectlens demo`` is the built-in study of the two bundled models.

Layout of a study folder::

    OUT/<label>/elicit/       one elicitation run per model
    OUT/<label>/likelihood/   one likelihood run per model
    OUT/<label>/vectors/      emotion vectors (when the stage is asked for)
    OUT/comparison/           encoders against the first model's emitted faces
    OUT/analysis/             analysis.json and figures
    OUT/report/               report.html and report.md

The package: ``model`` (the study file's schema), ``worker`` (one model's loaded weights serving its stages'
shards), ``executors`` (local, in this process; Ray, on actors across GPUs and nodes) and ``run``.
"""

from affectlens.study.model import (
    ElicitSettings,
    LikelihoodSettings,
    ModelEntry,
    Resources,
    Stage,
    Study,
    demo_study,
    load_study,
    parse_study,
)
from affectlens.study.run import run_study

__all__ = [
    "ElicitSettings", "LikelihoodSettings", "ModelEntry", "Resources", "Stage", "Study", "demo_study", "load_study",
    "parse_study", "run_study",
]  # fmt: skip
