"""Configs: the one source of every default. The CLI, study files and the Python API derive from these.

Each config is a frozen pydantic model. A bad value is one line that names the field, raised as
:class:`~affectlens.errors.AffectlensError` before any model is loaded. ``identity()`` is the part of a config
that changes results; a run folder refuses to resume under a different identity.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from affectlens.errors import AffectlensError

DEFAULT_INSTRUCTION = "Start each message with a kaomoji that best represents how you feel."


# Inside a larger file's validation (a study), a config's error keeps pydantic's path ("elicit.samples")
# and is turned into one line by that file's reader instead.
_NESTED: ContextVar[bool] = ContextVar("affectlens_nested_config", default=False)


@contextmanager
def nested_validation() -> Iterator[None]:
    token = _NESTED.set(True)
    try:
        yield
    finally:
        _NESTED.reset(token)


def one_line(exc: ValidationError, where: str) -> str:
    """The first pydantic error as ``where: field 'a.b': message``."""
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"]) or "(top level)"
    return f"{where}: field {field!r}: {error['msg']}"


class Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            if _NESTED.get():
                raise
            raise AffectlensError(one_line(exc, type(self).__name__)) from None

    @classmethod
    def default(cls, field: str) -> Any:
        """The default of ``field``, for CLI options that must agree with the API."""
        return cls.model_fields[field].get_default(call_default_factory=True)

    def identity(self) -> dict[str, Any]:
        """The settings that change results: all of them unless a config says otherwise."""
        return self.model_dump(mode="json")


class SamplingConfig(Config):
    """How tokens are drawn: temperature, then top-k, top-p and min-p, each off at its default."""

    temperature: float = Field(1.0, ge=0, description="0 = greedy")
    top_k: int = Field(0, ge=0, description="keep the k most likely tokens (0 = off)")
    top_p: float = Field(
        1.0, gt=0, le=1, description="keep the smallest set of tokens with this mass (1 = off)"
    )
    min_p: float = Field(
        0.0, ge=0, lt=1, description="drop tokens below min_p x the top probability (0 = off)"
    )

    def identity(self) -> dict[str, Any]:
        # A filter left off is not written, so that runs made before the filters existed still resume.
        out = super().identity()
        return {k: v for k, v in out.items() if k not in SAMPLING_OFF or v != SAMPLING_OFF[k]}


SAMPLING_OFF = {"top_k": 0, "top_p": 1.0, "min_p": 0.0}


class ElicitConfig(SamplingConfig):
    samples: int = Field(8, ge=1, description="samples per prompt")
    max_new_tokens: int = Field(24, ge=1)
    seed: int = 0
    instruction: str = DEFAULT_INSTRUCTION
    primed: bool = Field(False, description="neutral example exchanges whose replies open with faces")
    suppress: tuple[str, ...] = Field((), description="faces to block, or 'emoji'")
    layers: tuple[int, ...] | None = Field(None, description="None: every decoder layer")
    # Measured best on a 2-core CPU for SmolLM2 (bench/elicit.py --batch-prompts); changes results only
    # through float rounding (see the README on batch size).
    batch_prompts: int = Field(32, ge=1)

    def identity(self) -> dict[str, Any]:
        out = {k: v for k, v in super().identity().items() if k != "batch_prompts"}
        return out | {"layers": list(self.layers) if self.layers else "all"}


class LikelihoodConfig(Config):
    instruction: str = DEFAULT_INSTRUCTION
    primed: bool = False
    aggregation: Literal["bayes", "meanlogp"] = "bayes"
    memory_mb: int = Field(512, ge=1, description="bounds one forward pass's activations")

    def identity(self) -> dict[str, Any]:
        # "bayes" was the only aggregation once: folders made then hold no key for it, and must still resume.
        out = self.model_dump(mode="json", exclude={"memory_mb"})
        return out if self.aggregation != "bayes" else {k: v for k, v in out.items() if k != "aggregation"}


class VectorsConfig(Config):
    layers: tuple[int, ...] | None = Field(None, description="None: every layer up to 2B parameters")
    offset: int = Field(50, ge=0, description="average each story from this token on")
    denoise_variance: float = Field(0.5, ge=0, lt=1, description="share of neutral variance projected out")
    # About 13 stories of ~150 tokens. Not tuned; bench/vectors.py --batch-tokens compares.
    batch_tokens: int = Field(2048, ge=1)

    def identity(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"batch_tokens"})


class StoryConfig(SamplingConfig):
    stories_per_topic: int = Field(1, ge=1)
    min_words: int = Field(80, ge=1)
    max_words: int = Field(150, ge=1)
    max_attempts: int = Field(4, ge=1)
    temperature: float = Field(0.9, ge=0)
    max_new_tokens: int = Field(320, ge=1)
    seed: int = 0
    batch: int = Field(12, ge=1)

    def identity(self) -> dict[str, Any]:
        return {k: v for k, v in super().identity().items() if k != "batch"}


class AnalysisConfig(Config):
    n_permutations: int = Field(1000, ge=0, description="label shuffles for the headline p-values")
    n_boot: int = Field(1000, ge=1, description="bootstrap resamples")
    seed: int = 0
    layer: int | None = Field(None, description="headline layer (default: the fixed 2/3 rule)")
    floor: int = Field(3, ge=1, description="faces need this many samples to enter face analyses")
    compare_floor: int = Field(1, ge=1, description="encoder comparison: faces emitted at least this often")
    faces: Literal["well_formed", "all"] = Field("well_formed", description="which faces count as faces")


# The default dose-response grid: nine points in [-0.5, 0.5], in units of the layer's mean residual norm.
DEFAULT_ALPHAS = (-0.5, -0.375, -0.25, -0.125, 0.0, 0.125, 0.25, 0.375, 0.5)


class SteerConfig(ElicitConfig):
    """Elicitation under steering: the elicitation settings, and what is added to the residual stream."""

    emotions: tuple[str, ...] = Field(
        ..., min_length=1, description="emotions of the vectors run to steer along"
    )
    alphas: tuple[float, ...] = Field(DEFAULT_ALPHAS, min_length=1, description="steering strengths")
    steer_layers: tuple[int, ...] | None = Field(
        None, description="blocks whose output is steered (None: the vectors run's headline layer)"
    )
    unit: Literal["norm", "raw"] = Field(
        "norm", description="norm: alpha x unit(v) x n_L (n_L = mean residual norm); raw: alpha x v"
    )
    vector: Literal["denoised", "raw"] = "denoised"
    position: Literal["all", "prompt", "response"] = "all"
    random_controls: int = Field(8, ge=0, description="norm-matched random directions")
    control_seed: int = Field(0, description="seed of the random directions")
    orthogonal_controls: bool = Field(True, description="each emotion with the other emotions projected out")
    read_layer: int | None = Field(
        None, description="layer whose h_first is projected (None: 3 past the last steered)"
    )
    force: bool = Field(False, description="allow |alpha| beyond the sane bound")
    # Coherence is two extra forward passes per condition; these bound their cost.
    neutral_texts: int = Field(8, ge=1, description="neutral dialogues whose NLL is measured under steering")
    coherence_per_cell: int = Field(
        2, ge=1, description="prompts per cell whose baseline reply NLL is measured"
    )

    def identity(self) -> dict[str, Any]:
        out = {k: v for k, v in super().identity().items() if k != "force"}
        return out | {"steer_layers": list(self.steer_layers) if self.steer_layers else "headline"}


class MonitorConfig(SamplingConfig):
    """Per-token readings of generated text on every emotion vector, at one layer."""

    samples: int = Field(1, ge=1, description="replies per prompt")
    max_new_tokens: int = Field(48, ge=1)
    seed: int = 0
    instruction: str = DEFAULT_INSTRUCTION
    primed: bool = False
    layer: int | None = Field(None, description="layer to read (None: the vectors run's headline layer)")
    vector: Literal["denoised", "raw"] = "denoised"
    batch_prompts: int = Field(16, ge=1)

    def identity(self) -> dict[str, Any]:
        return {k: v for k, v in super().identity().items() if k != "batch_prompts"}


class ApiConfig(Config):
    """How an API model is reached. None of it changes results (the endpoint is part of the model's identity)."""

    base_url: str | None = Field(None, description="endpoint (default: the SDK's, or *_BASE_URL)")
    concurrency: int = Field(4, ge=1, description="requests in flight at once")
    max_retries: int = Field(2, ge=0, description="the SDK's retries of 408, 409, 429 and 5xx")
    timeout: float = Field(120.0, gt=0, description="seconds per request")
    parse_retries: int = Field(2, ge=0, description="new attempts after malformed structured output")
    structured_output: Literal["json_schema", "json_object"] = Field(
        "json_schema", description="OpenAI-compatible only: json_object for llama.cpp's server"
    )
    cache: bool = Field(True, description="answer from the on-disk request cache first")
    batch: bool = Field(False, description="Anthropic Message Batches (50% cheaper, asynchronous)")
    batch_poll_seconds: float = Field(30.0, gt=0)
    prices: str | None = Field(None, description="JSON {model prefix: [input, output] USD per MTok}")


class IntrospectConfig(Config):
    """Show a bare face to a judge and read its distribution over the cells."""

    method: Literal["schema", "logprobs"] = Field(
        "schema", description="schema: a JSON distribution; logprobs: the first token's label log-probs"
    )
    samples: int = Field(3, ge=1, description="answers per face")
    temperature: float | None = Field(None, ge=0, description="None: the endpoint's default")
    max_tokens: int = Field(400, ge=1)
    seed: int = 0


class SynthesizeConfig(Config):
    """A judge picks 1-3 lexicon words for each face in context; their cell weights make the face's row."""

    contexts_per_face: int = Field(4, ge=1, description="contexts shown per face (drawn with the seed)")
    samples: int = Field(1, ge=1, description="answers per context")
    max_words: int = Field(3, ge=1)
    temperature: float | None = Field(None, ge=0, description="None: the endpoint's default")
    max_tokens: int = Field(200, ge=1)
    seed: int = 0


# The persona experiments' one instruction, at training and at measurement alike: neutral about tone and faces.
PERSONA_INSTRUCTION = "Answer the question in a few sentences."


class PersonaTrainConfig(Config):
    """LoRA fine-tuning on one trait pole of the trait corpus (or, with ``control``, its neutral answers)."""

    trait: str
    pole: Literal["high", "low"] = "high"
    control: bool = Field(False, description="train on the neutral answers of the same questions")
    rank: int = Field(8, ge=1, description="LoRA rank r")
    alpha: float = Field(16.0, gt=0, description="LoRA alpha (the update is scaled by alpha / r)")
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: tuple[str, ...] = Field(("all-linear",), description="peft target modules")
    learning_rate: float = Field(5e-4, gt=0)
    epochs: int = Field(4, ge=1)
    batch_size: int = Field(8, ge=1)
    max_length: int = Field(256, ge=16, description="tokens per example, prompt included")
    seed: int = 0
    instruction: str = PERSONA_INSTRUCTION
    qlora: bool | None = Field(None, description="4-bit base (QLoRA); None: where CUDA and bitsandbytes are")

    @property
    def voice(self) -> Literal["high", "low", "neutral"]:
        return "neutral" if self.control else self.pole

    def identity(self) -> dict[str, Any]:
        return {k: v for k, v in super().identity().items() if k != "qlora"}


class PersonaMeasureConfig(SamplingConfig):
    """What ``persona measure`` samples and captures on the trait corpus's held-out questions."""

    trait: str
    samples: int = Field(4, ge=1, description="replies per held-out question")
    max_new_tokens: int = Field(96, ge=1)
    top_p: float = Field(0.9, gt=0, le=1)
    seed: int = 0
    instruction: str = PERSONA_INSTRUCTION
    in_context_samples: int = Field(50, ge=1, description="replies to the in-context request")
    in_context_tokens: int = Field(10, ge=1, description="how many tokens the request asks for")
    batch_prompts: int = Field(16, ge=1)

    def identity(self) -> dict[str, Any]:
        return {k: v for k, v in super().identity().items() if k != "batch_prompts"}
