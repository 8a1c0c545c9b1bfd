"""The Python API: six verbs over run folders. Configs come from :mod:`affectlens.config`.

Each verb imports what it needs when called, so ``import affectlens`` stays light (no torch, no
transformers) until a model is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from affectlens.config import AnalysisConfig, ElicitConfig, LikelihoodConfig, VectorsConfig

if TYPE_CHECKING:
    from affectlens.runtime.loading import ModelHandle
    from affectlens.stimuli import PromptSet
    from affectlens.stimuli.corpus import Corpus


def load_model(spec: str, *, dtype: str | None = None, device: str | None = None,
               trust_remote_code: bool = False) -> ModelHandle:  # fmt: skip
    """A bundled alias (``smollm2-135m``, ``gemma3-270m``), a Hugging Face hub id, a model folder or a
    ``.gguf`` file, loaded for capture (fp32 on CPU, bf16 on CUDA)."""
    from affectlens.runtime.loading import load_model as load

    return load(spec, dtype=dtype, device=device, trust_remote_code=trust_remote_code)


def _handle(model: ModelHandle | str) -> ModelHandle:
    return load_model(model) if isinstance(model, str) else model


def _prompts(prompts: PromptSet | str | Path | None) -> PromptSet:
    from affectlens.stimuli import PromptSet, load_prompts

    return prompts if isinstance(prompts, PromptSet) else load_prompts(prompts)


def elicit(model: ModelHandle | str, out: str | Path, *, prompts: PromptSet | str | Path | None = None,
           config: ElicitConfig | None = None, quiet: bool = False) -> dict[str, Any]:  # fmt: skip
    """Replies that open with a face, and h_first, into run folder ``out`` (resumed if it exists).

    Returns the summary (face rate per cell, top faces) that the manifest records.
    """
    from affectlens.stages.elicit import elicit as run

    config = config or ElicitConfig()
    return run(_handle(model), str(out), _prompts(prompts), config, quiet=quiet)


def likelihood(model: ModelHandle | str, out: str | Path, *, faces: Sequence[str] | str | Path = "catalogue",
               prompts: PromptSet | str | Path | None = None, config: LikelihoodConfig | None = None,
               quiet: bool = False) -> dict[str, Any]:  # fmt: skip
    """log P(face | prompt) for every face and prompt, and each face's distribution over cells.

    ``faces``: a list of faces, ``"catalogue"``, a file with one face a line, or an elicitation run folder
    (the faces it emitted).
    """
    from affectlens.stages.likelihood import check_same_prompting
    from affectlens.stages.likelihood import likelihood as run
    from affectlens.stimuli import load_catalogue
    from affectlens.store.runs import emitted_faces

    config = config or LikelihoodConfig()
    if isinstance(faces, str | Path):
        source = str(faces)
        if Path(source).is_dir():
            check_same_prompting(source, config)
        vocabulary = (
            load_catalogue() if source == "catalogue"
            else emitted_faces(source) if Path(source).is_dir() else load_catalogue(source)
        )  # fmt: skip
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
      alignment between runs) into ``out/analysis.json``: result ``"kaomoji"``;
    - likelihood runs: each against the faces the first elicitation run emitted, into ``out/comparison``:
      result ``"comparison"`` (needs an elicitation run);
    - vectors runs: the emotion-vector analyses into ``out/emotions/<model>``, bridged to an elicitation run
      of the same model when one is given: result ``"emotions"``, by model spec.
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


__all__ = ["analyze", "elicit", "likelihood", "load_model", "report", "vectors"]
