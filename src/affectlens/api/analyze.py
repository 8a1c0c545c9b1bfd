"""``affectlens.analyze``: sort run folders by kind (from their manifests) and run each kind's analyses.

Encoder runs (likelihood, introspect, synthesize: ``ENCODER_KINDS``) are compared with the faces the first
elicitation run emitted, which may be an API model's run (the comparison reads generations only); beside a
steer run, a likelihood run is also its face encoder. Elicitation runs without hidden states get the
analyses that need none, and say which they skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from affectlens.config import AnalysisConfig
from affectlens.errors import AffectlensError
from affectlens.store.runs import ELICIT, ENCODER_KINDS, LIKELIHOOD, STEER, VECTORS, finished_stages


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)


def _spec(run: str, kind: str) -> str:
    return str(finished_stages(run)[kind]["identity"]["model"]["spec"])


def _has_hidden(run: str) -> bool:
    return bool(finished_stages(run)[ELICIT].get("hidden_states", True))


def _unique(label: str, taken: dict[str, Any]) -> str:
    unique, k = label, 2
    while unique in taken:
        unique, k = f"{label} #{k}", k + 1
    return unique


def analyze_runs(
    runs: list[str], out: Path, config: AnalysisConfig, *, quiet: bool = False
) -> dict[str, Any]:
    if not runs:
        raise AffectlensError("analyze needs at least one run folder")
    by_kind: dict[str, list[str]] = {
        ELICIT: [],
        **{kind: [] for kind in ENCODER_KINDS},
        VECTORS: [],
        STEER: [],
    }
    encoder_runs: list[str] = []  # every run with an encoder stage, in the order given
    for run in runs:
        kinds = [kind for kind in by_kind if kind in finished_stages(run)]
        if not kinds:
            raise AffectlensError(f"{run} has no finished {', '.join(by_kind)} stage")
        for kind in kinds:  # a folder that holds several stages is analysed as each of them
            by_kind[kind].append(run)
        if any(kind in ENCODER_KINDS for kind in kinds):
            encoder_runs.append(run)
    # Beside a steer run a likelihood run is its encoder; otherwise encoders are compared with emitted faces.
    judges = [run for run in encoder_runs if run not in by_kind[LIKELIHOOD]]
    if encoder_runs and not by_kind[ELICIT] and (not by_kind[STEER] or judges):
        raise AffectlensError(
            "encoder runs (likelihood, introspect, synthesize) are compared with the faces of an elicitation "
            "run (a likelihood run may instead encode a steer run's faces): give one too"
        )
    result: dict[str, Any] = {}
    shared = {"n_boot": config.n_boot, "seed": config.seed}
    if by_kind[ELICIT]:
        from affectlens.api.kaomoji import analyze_kaomoji

        result["kaomoji"] = analyze_kaomoji(
            by_kind[ELICIT], str(out), n_permutations=config.n_permutations, layer=config.layer,
            floor=config.floor, faces=config.faces, quiet=quiet, **shared,
        )  # fmt: skip
    if encoder_runs and by_kind[ELICIT]:
        from affectlens.api.compare import compare

        result["comparison"] = compare(
            by_kind[ELICIT][0],
            encoder_runs,
            str(out / "comparison"),
            floor=config.compare_floor,
            **shared,
        )
    if by_kind[VECTORS]:
        from affectlens.api.emotions import analyze_emotions

        # The bridge reads h_first: only elicitation runs with hidden states can be bridged to.
        specs = {_spec(r, ELICIT): r for r in by_kind[ELICIT] if _has_hidden(r)}
        result["emotions"] = {}
        for run in by_kind[VECTORS]:
            spec = _spec(run, VECTORS)
            result["emotions"][spec] = analyze_emotions(
                run, str(out / "emotions" / _slug(spec)), n_permutations=config.n_permutations,
                elicitation_run=specs.get(spec), layer=config.layer, **shared,
            )  # fmt: skip
    if by_kind[STEER]:
        from affectlens.api.steering import analyze_steer_run

        encoders: dict[str, str] = {}
        for run in by_kind[LIKELIHOOD]:  # the first likelihood run of each model encodes its steer runs
            encoders.setdefault(_spec(run, LIKELIHOOD), run)
        result["steering"] = {}
        for run in by_kind[STEER]:
            label = _unique(_spec(run, STEER), result["steering"])
            result["steering"][label] = analyze_steer_run(
                run, out / "steering" / _slug(label), encoder=encoders.get(_spec(run, STEER)), config=config
            )
    return result
