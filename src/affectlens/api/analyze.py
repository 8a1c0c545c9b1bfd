"""``affectlens.analyze``: sort run folders by kind (from their manifests) and run each kind's analyses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from affectlens.config import AnalysisConfig
from affectlens.errors import AffectlensError
from affectlens.store.runs import ELICIT, LIKELIHOOD, VECTORS, finished_stages


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)


def analyze_runs(
    runs: list[str], out: Path, config: AnalysisConfig, *, quiet: bool = False
) -> dict[str, Any]:
    if not runs:
        raise AffectlensError("analyze needs at least one run folder")
    by_kind: dict[str, list[str]] = {ELICIT: [], LIKELIHOOD: [], VECTORS: []}
    for run in runs:
        kinds = [kind for kind in by_kind if kind in finished_stages(run)]
        if not kinds:
            raise AffectlensError(f"{run} has no finished elicit, likelihood or vectors stage")
        for kind in kinds:  # a folder that holds several stages is analysed as each of them
            by_kind[kind].append(run)
    if by_kind[LIKELIHOOD] and not by_kind[ELICIT]:
        raise AffectlensError(
            "likelihood runs are compared with the faces of an elicitation run: give one too"
        )
    result: dict[str, Any] = {}
    shared = {"n_boot": config.n_boot, "seed": config.seed}
    if by_kind[ELICIT]:
        from affectlens.api.kaomoji import analyze_kaomoji

        result["kaomoji"] = analyze_kaomoji(
            by_kind[ELICIT], str(out), n_permutations=config.n_permutations, layer=config.layer,
            floor=config.floor, faces=config.faces, quiet=quiet, **shared,
        )  # fmt: skip
    if by_kind[LIKELIHOOD]:
        from affectlens.api.compare import compare

        result["comparison"] = compare(
            by_kind[ELICIT][0],
            by_kind[LIKELIHOOD],
            str(out / "comparison"),
            floor=config.compare_floor,
            **shared,
        )
    if by_kind[VECTORS]:
        from affectlens.api.emotions import analyze_emotions

        specs = {finished_stages(r)[ELICIT]["identity"]["model"]["spec"]: r for r in by_kind[ELICIT]}
        result["emotions"] = {}
        for run in by_kind[VECTORS]:
            spec = finished_stages(run)[VECTORS]["identity"]["model"]["spec"]
            result["emotions"][spec] = analyze_emotions(
                run, str(out / "emotions" / _slug(spec)), n_permutations=config.n_permutations,
                elicitation_run=specs.get(spec), layer=config.layer, **shared,
            )  # fmt: skip
    return result
