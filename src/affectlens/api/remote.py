"""API models as emitters and judges: elicitation, introspection and synthesis through a provider.

Each verb opens the provider (which checks its key in the environment), builds the stage, and either runs it
or, with ``dry_run``, returns its plan (requests, cache hits, an estimated cost) having sent nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from affectlens.config import ApiConfig, ElicitConfig, IntrospectConfig, SynthesizeConfig
from affectlens.runtime.providers import Provider, open_provider
from affectlens.stages.api_elicit import ApiElicitation
from affectlens.stages.api_stage import ApiStage
from affectlens.stages.introspect import Introspection
from affectlens.stages.synthesize import Synthesis
from affectlens.stimuli import PromptSet, load_catalogue
from affectlens.store.runs import emitted_faces


def provider(spec: str, api: ApiConfig) -> Provider:
    return open_provider(
        spec,
        base_url=api.base_url,
        max_retries=api.max_retries,
        timeout=api.timeout,
        structured_output=api.structured_output,
    )


def _run(stage: ApiStage, dry_run: bool) -> dict[str, Any]:
    return stage.plan() if dry_run else stage.run()


def elicit_api(spec: str, out: str | Path, prompts: PromptSet, config: ElicitConfig, api: ApiConfig, *,
               dry_run: bool = False, quiet: bool = False) -> dict[str, Any]:  # fmt: skip
    return _run(ApiElicitation(provider(spec, api), str(out), prompts, config, api, quiet=quiet), dry_run)


def judge_faces(faces: Sequence[str] | str | Path) -> tuple[list[str], str]:
    """(faces, source) from a list, ``"catalogue"``, a file with one face a line, or an elicitation run."""
    if not isinstance(faces, str | Path):
        return list(faces), "list"
    source = str(faces)
    if source == "catalogue":
        return load_catalogue(), source
    return (emitted_faces(source) if Path(source).is_dir() else load_catalogue(source)), source


def introspect(judge: str, out: str | Path, *, faces: Sequence[str] | str | Path = "catalogue",
               config: IntrospectConfig | None = None, api: ApiConfig | None = None, dry_run: bool = False,
               quiet: bool = False) -> dict[str, Any]:  # fmt: skip
    api = api or ApiConfig()
    vocabulary, source = judge_faces(faces)
    stage = Introspection(provider(judge, api), str(out), vocabulary, config or IntrospectConfig(), api,
                          faces_source=source, quiet=quiet)  # fmt: skip
    return _run(stage, dry_run)


def synthesize(judge: str, out: str | Path, *, contexts: str | Path, config: SynthesizeConfig | None = None,
               api: ApiConfig | None = None, dry_run: bool = False, quiet: bool = False) -> dict[str, Any]:  # fmt: skip
    api = api or ApiConfig()
    stage = Synthesis(
        provider(judge, api), str(out), str(contexts), config or SynthesizeConfig(), api, quiet=quiet
    )
    return _run(stage, dry_run)
