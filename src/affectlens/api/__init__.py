"""The Python API: verbs over run folders, and the steering context. Configs come from :mod:`affectlens.config`.

Each verb imports what it needs when called, so ``import affectlens`` stays light (no torch, no
transformers) until a model is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    import torch

    from affectlens.runtime.loading import ModelHandle
    from affectlens.runtime.steer import Steering
    from affectlens.stimuli import PromptSet
    from affectlens.stimuli.corpus import Corpus


def load_model(spec: str, *, dtype: str | None = None, device: str | None = None,
               trust_remote_code: bool = False, quantize: str | None = None) -> ModelHandle:  # fmt: skip
    """A bundled alias (``smollm2-135m``, ``gemma3-270m``), a Hugging Face hub id, a model folder, a ``.gguf``
    file or a ``persona train`` run (base plus adapter), loaded for capture (fp32 on CPU, bf16 on CUDA;
    ``quantize`` 4bit or 8bit through bitsandbytes, CUDA only)."""
    from affectlens.runtime.loading import load_model as load

    return load(spec, dtype=dtype, device=device, trust_remote_code=trust_remote_code, quantize=quantize)


def _handle(model: ModelHandle | str) -> ModelHandle:
    return load_model(model) if isinstance(model, str) else model


def _prompts(prompts: PromptSet | str | Path | None) -> PromptSet:
    from affectlens.stimuli import PromptSet, load_prompts

    return prompts if isinstance(prompts, PromptSet) else load_prompts(prompts)


def elicit(model: ModelHandle | str, out: str | Path, *, prompts: PromptSet | str | Path | None = None,
           config: ElicitConfig | None = None, api: ApiConfig | None = None, dry_run: bool = False,
           quiet: bool = False) -> dict[str, Any]:  # fmt: skip
    """Replies that open with a face, and h_first, into run folder ``out`` (resumed if it exists).

    ``model`` may be an API spec (``anthropic:MODEL``, ``openai:MODEL``; reached as ``api`` says): the same
    prompts and generations, no hidden states. ``dry_run`` (API models) returns the plan and sends nothing.
    Returns the summary (face rate per cell, top faces) that the manifest records.
    """
    from affectlens.runtime.providers.base import is_api_spec

    config = config or ElicitConfig()
    if isinstance(model, str) and is_api_spec(model):
        from affectlens.api.remote import elicit_api

        return elicit_api(
            model, out, _prompts(prompts), config, api or ApiConfig(), dry_run=dry_run, quiet=quiet
        )
    from affectlens.stages.elicit import elicit as run

    return run(_handle(model), str(out), _prompts(prompts), config, quiet=quiet)


def introspect(judge: str, out: str | Path, *, faces: Sequence[str] | str | Path = "catalogue",
               config: IntrospectConfig | None = None, api: ApiConfig | None = None, dry_run: bool = False,
               quiet: bool = False) -> dict[str, Any]:  # fmt: skip
    """An API judge's distribution over the cells for each bare face, as an encoder run (``face_cells``).

    ``faces``: a list, ``"catalogue"``, a file with one face a line, or an elicitation run (its faces).
    """
    from affectlens.api.remote import introspect as run

    return run(judge, out, faces=faces, config=config, api=api, dry_run=dry_run, quiet=quiet)


def synthesize(judge: str, out: str | Path, *, contexts: str | Path, config: SynthesizeConfig | None = None,
               api: ApiConfig | None = None, dry_run: bool = False, quiet: bool = False) -> dict[str, Any]:  # fmt: skip
    """The bag-of-lexicon encoder: an API judge picks lexicon words for each face of elicitation run
    ``contexts`` in its contexts; the words' cell weights make each face's row of ``face_cells``."""
    from affectlens.api.remote import synthesize as run

    return run(judge, out, contexts=contexts, config=config, api=api, dry_run=dry_run, quiet=quiet)


def face_vocabulary(source: str, config: LikelihoodConfig) -> list[str]:
    """The faces ``source`` names: "catalogue", an elicitation run (its emitted faces, prompted as ``config``
    prompts) or a catalogue file."""
    from affectlens.stages.likelihood import check_same_prompting
    from affectlens.stimuli import load_catalogue
    from affectlens.store.runs import emitted_faces

    if source == "catalogue":
        return load_catalogue()
    if Path(source).is_dir():
        check_same_prompting(source, config)
        return emitted_faces(source)
    return load_catalogue(source)


def likelihood(model: ModelHandle | str, out: str | Path, *, faces: Sequence[str] | str | Path = "catalogue",
               prompts: PromptSet | str | Path | None = None, config: LikelihoodConfig | None = None,
               quiet: bool = False) -> dict[str, Any]:  # fmt: skip
    """log P(face | prompt) for every face and prompt, and each face's distribution over cells.

    ``faces``: a list of faces, ``"catalogue"``, a file with one face a line, or an elicitation run folder
    (the faces it emitted).
    """
    from affectlens.stages.likelihood import likelihood as run

    config = config or LikelihoodConfig()
    if isinstance(faces, str | Path):
        source = str(faces)
        vocabulary = face_vocabulary(source, config)
    else:
        source, vocabulary = "list", list(faces)
    handle = _handle(model)
    return run(handle, str(out), vocabulary, _prompts(prompts), config, faces_source=source, quiet=quiet)


def vectors(model: ModelHandle | str, out: str | Path, *, corpus: Corpus | str | Path | None = None,
            config: VectorsConfig | None = None, quiet: bool = False) -> dict[str, Any]:  # fmt: skip
    """Emotion vectors from the story corpus (shipped by default) into run folder ``out``."""
    from affectlens.stages.vectors import vectors as run
    from affectlens.stimuli.corpus import Corpus, load_corpus

    loaded = corpus if isinstance(corpus, Corpus) else load_corpus(corpus)
    return run(_handle(model), str(out), loaded, config or VectorsConfig(), quiet=quiet)


def analyze(runs: Sequence[str | Path], out: str | Path, *, config: AnalysisConfig | None = None,
            quiet: bool = False) -> dict[str, Any]:  # fmt: skip
    """Analyze run folders by what each one holds (read from its manifest); returns results by kind.

    - elicitation runs: the kaomoji analyses (hidden -> cell, face -> cell, hidden -> face, geometry, and
      alignment between runs) into ``out/analysis.json``: result ``"kaomoji"`` (an API model's run, with no
      hidden states, gets face -> cell only, and says what it skipped);
    - encoder runs (likelihood, introspect, synthesize): each against the faces the first elicitation run
      emitted, into ``out/comparison``, with the ensemble search over all of them: result ``"comparison"``
      (needs an elicitation run; beside a steer run likelihood runs are only its encoders);
    - vectors runs: the emotion-vector analyses into ``out/emotions/<model>``, bridged to an elicitation run
      of the same model when one is given: result ``"emotions"``, by model spec;
    - steer runs: dose-response against the random controls, with the first likelihood run of the same model
      as the face encoder, into ``out/steering/<model>``: result ``"steering"``, by model spec.
    """
    from affectlens.api.analyze import analyze_runs

    return analyze_runs([str(r) for r in runs], Path(out), config or AnalysisConfig(), quiet=quiet)


def report(*paths: str | Path, out: str | Path | None = None, title: str = "affectlens report",
           timings: dict[str, float] | None = None) -> Path:  # fmt: skip
    """One self-contained HTML report (and a Markdown twin) of every run and analysis under ``paths``.

    ``out`` defaults to ``<first path>/report``; ``timings`` (seconds by step) go into its setup section.
    Returns the HTML file's path.
    """
    from affectlens.reporting.build import build_report

    return build_report(*paths, out=out, title=title, timings=timings)


def emotion_vector(
    vectors_run: str | Path, emotion: str, layer: int, *, kind: str = "denoised"
) -> torch.Tensor:
    """One emotion's vector at one stored layer of a vectors run, as a float32 tensor [d]."""
    import torch

    from affectlens.errors import AffectlensError
    from affectlens.store.runs import read_vectors

    run = read_vectors(vectors_run)
    names = list(run.emotions["name"])
    if emotion not in names:
        raise AffectlensError(
            f"emotion {emotion!r} not in vectors run {vectors_run}; it has {', '.join(names)}"
        )
    if layer not in run.layers:
        raise AffectlensError(f"layer {layer} is not in vectors run {vectors_run} (it has {run.layers})")
    table = run.denoised if kind == "denoised" else run.raw
    return torch.from_numpy(table[names.index(emotion), run.layers.index(layer)].copy()).float()


def steer(model: ModelHandle, vector: torch.Tensor | Mapping[int, torch.Tensor], *,
          layer: int | Sequence[int] | None = None, alpha: float, unit: str = "norm",
          norms: Mapping[int, float] | None = None, position: str = "all") -> Steering:  # fmt: skip
    """A context manager that adds ``alpha * unit(v) * n_L`` to decoder block ``layer``'s output while open.

    ``vector``: one vector [d] (used at every layer in ``layer``) or ``{layer: vector}``. With ``unit="norm"``
    n_L is measured on the shipped neutral dialogues (from token 50, past the attention sink) unless
    ``norms`` gives it; ``unit="raw"`` adds ``alpha * v``. ``position``: all, prompt or response tokens.
    ``with affectlens.steer(model, v, layer=19, alpha=0.25): model.model.generate(...)``.
    """
    import torch

    from affectlens.errors import AffectlensError
    from affectlens.runtime.steer import Steering, mean_norms, steer_terms
    from affectlens.stimuli.corpus import load_corpus

    if isinstance(vector, Mapping):
        per_layer = {int(k): torch.as_tensor(v) for k, v in vector.items()}
    elif layer is None:
        raise AffectlensError("steer needs layer= when vector is a single vector")
    else:
        layers = [layer] if isinstance(layer, int) else list(layer)
        per_layer = dict.fromkeys(layers, torch.as_tensor(vector))
    if unit == "norm" and norms is None:
        norms = mean_norms(model, list(per_layer), [d.text for d in load_corpus().neutral])
    return Steering(model, steer_terms(per_layer, unit=unit, norms=norms), alpha, position)  # type: ignore[arg-type]


def steer_sweep(model: ModelHandle | str, out: str | Path, *, vectors: str | Path, config: SteerConfig,
                prompts: PromptSet | str | Path | None = None, quiet: bool = False) -> dict[str, Any]:  # fmt: skip
    """Elicitation under steering into run folder ``out`` (resumed per direction and alpha): every steered
    emotion, its orthogonalised twin and the random controls, at every alpha, plus the unsteered baseline.

    Returns the summary the manifest records; the tables are read with ``store.runs.read_steer``.
    """
    from affectlens.stages.steer import steer_sweep as run

    return run(_handle(model), str(out), _prompts(prompts), str(vectors), config, quiet=quiet)


def monitor(model: ModelHandle | str, out: str | Path, *, vectors: str | Path,
            prompts: PromptSet | str | Path | None = None, config: MonitorConfig | None = None,
            quiet: bool = False) -> dict[str, Any]:  # fmt: skip
    """Per-token readings of generated replies on every emotion vector of ``vectors`` (centred on the neutral
    mean, at one layer) into run folder ``out``, with ``readings.png``; returns the manifest's summary."""
    from affectlens.api.monitor import monitor as run

    return run(model, out, vectors=vectors, prompts=prompts, config=config, quiet=quiet)


def persona_train(
    model: ModelHandle | str, out: str | Path, config: PersonaTrainConfig, **options: Any
) -> dict[str, Any]:
    """Train (or resume) a LoRA adapter on a trait pole of the trait corpus into run folder ``out``; the run
    is then a model spec. Options: ``corpus``, ``dtype``, ``device``, ``quiet``."""
    from affectlens.api.persona import persona_train as run

    return run(model, out, config, **options)


def persona_measure(model: ModelHandle | str, out: str | Path, config: PersonaMeasureConfig,
                    **options: Any) -> dict[str, Any]:  # fmt: skip
    """Emoji rates, emoji mass, the in-context test and MLP neurons on the held-out questions into ``out``.
    Options: ``baseline`` (a spec or a measure run: also measured, and compared), ``label``, ``corpus``,
    ``dtype``, ``device``, ``quantize``, ``quiet``."""
    from affectlens.api.persona import persona_measure as run

    return run(model, out, config, **options)


def persona_compare(runs: Sequence[str | Path], out: str | Path, **options: Any) -> dict[str, Any]:
    """Compare persona measure runs of one trait (the first is the base) into ``out/persona.json``."""
    from affectlens.api.persona import persona_compare as run

    return run(list(runs), out, **options)


__all__ = [
    "analyze", "elicit", "emotion_vector", "introspect", "likelihood", "load_model", "monitor", "persona_compare",
    "persona_measure", "persona_train", "report", "steer", "steer_sweep", "synthesize", "vectors",
]  # fmt: skip
