"""affectlens: does a language model's kaomoji track its internal state?

The public API is a few verbs, the steering context, and their configs::

    import affectlens
    from affectlens.config import ElicitConfig

    model = affectlens.load_model("smollm2-135m")
    affectlens.elicit(model, "runs/smol", config=ElicitConfig(samples=8, primed=True))
    affectlens.analyze(["runs/smol"], "runs/analysis")
    affectlens.report("runs/smol", "runs/analysis", out="runs/report")

``import affectlens`` does not import torch or transformers; the verbs do, when called.
"""

from affectlens.api import (
    analyze,
    elicit,
    emotion_vector,
    introspect,
    likelihood,
    load_model,
    monitor,
    persona_compare,
    persona_measure,
    persona_train,
    report,
    steer,
    steer_sweep,
    synthesize,
    vectors,
)
from affectlens.config import (
    AnalysisConfig,
    ApiConfig,
    ElicitConfig,
    IntrospectConfig,
    LikelihoodConfig,
    MonitorConfig,
    PersonaMeasureConfig,
    PersonaTrainConfig,
    SteerConfig,
    SynthesizeConfig,
    VectorsConfig,
)
from affectlens.sentences import emoji_sentence_ratio
from affectlens.version import __version__

__all__ = [
    "AnalysisConfig",
    "ApiConfig",
    "ElicitConfig",
    "IntrospectConfig",
    "LikelihoodConfig",
    "MonitorConfig",
    "PersonaMeasureConfig",
    "PersonaTrainConfig",
    "SteerConfig",
    "SynthesizeConfig",
    "VectorsConfig",
    "__version__",
    "analyze",
    "elicit",
    "emoji_sentence_ratio",
    "emotion_vector",
    "introspect",
    "likelihood",
    "load_model",
    "monitor",
    "persona_compare",
    "persona_measure",
    "persona_train",
    "report",
    "steer",
    "steer_sweep",
    "synthesize",
    "vectors",
]
