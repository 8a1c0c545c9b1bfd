"""The encoder comparison in words: the Markdown tables ``compare`` prints and saves, and its report section.

Both read the dict that ``affectlens.api.compare.compare`` returns and writes as ``comparison.json``. Every
table names the faces its rows are scored on and carries the two know-nothing baselines on those faces:
``uniform`` (1/k in every cell) and the truth's ``marginal`` (its overall cell distribution, each face's own
emits left out).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from affectlens.reporting.document import Figure, Section, Table
from affectlens.reporting.format import MISSING, estimate, interval, number

NO_INTERVAL = "[n/a]"  # a thin row in the Markdown table: too few faces for an interval
FACE_SETS = {
    "own": "the truth's faces at the floor that this encoder scores",
    "common": "the faces at the floor that every encoder and the truth share",
}
UNIFORM, MARGINAL = "uniform baseline (1/k per cell)", "truth marginal baseline (leave-one-face-out)"
# What each kind of encoder run is, as the section says it; an encoder's name ends in "(<kind>)".
KINDS = {
    "likelihood": "a model's own LM head, P(face | prompt) over the prompts of each cell",
    "introspect": "an API judge shown the bare face, answering with a distribution over the cells",
    "synthesize": "an API judge picking lexicon words for the face in context, the words' cell weights averaged",
    "elicit": "another run's emissions",
}


def _estimate(row: dict[str, Any], key: str, missing: str = NO_INTERVAL) -> str:
    value = row.get(key)
    value = None if value is None else float(value)  # a whole-number score still prints with decimals
    return estimate(value, (row.get(f"{key}_lo"), row.get(f"{key}_hi")), missing=missing).strip()


def _pair(row: dict[str, Any], prefix: str) -> str:
    """``face-uniform / emit-weighted`` of one baseline."""
    return f"{number(row.get(f'{prefix}_face_uniform'))} / {number(row.get(f'{prefix}_emit_weighted'))}"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|")


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table: encoder, face_uniform [lo, hi], emit_weighted [lo, hi], n_faces, the face set, and
    the uniform and truth-marginal baselines (face-uniform / emit-weighted) on the same faces.

    Rows are ``compare_to_truth`` results with an ``"encoder"`` name; intervals are 95%, and a thin row
    shows ``[n/a]`` in place of its interval.
    """
    lines = [
        "| encoder | face_uniform [95% CI] | emit_weighted [95% CI] | n_faces | faces "
        "| uniform baseline (fu / ew) | marginal baseline (fu / ew) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        name = _cell(row.get("encoder", ""))
        uniform, weighted = _estimate(row, "face_uniform"), _estimate(row, "emit_weighted")
        baselines = f"{_pair(row, 'uniform')} | {_pair(row, 'marginal')}"
        lines.append(
            f"| {name} | {uniform} | {weighted} | {row.get('n_faces', 0)} | {row.get('face_set', MISSING)} "
            f"| {baselines} |"
        )
    return "\n".join(lines) + "\n"


def _held(best: dict[str, Any]) -> dict[str, Any]:
    """The best ensemble's held-out numbers under the plain keys (face_uniform, emit_weighted_lo, ...)."""
    held = {key.removeprefix("heldout_"): value for key, value in best.items() if key.startswith("heldout_")}
    return {**held, "n_faces": best["n_faces"]}


def _heldout_label(best: dict[str, Any]) -> str:
    return (
        f"best ensemble {best['members']}, held out ({best.get('heldout_folds')}-fold cross-fitting, "
        f"{best.get('heldout_splits')} halvings, seed {best.get('heldout_seed')})"
    )


def common_rows(comparison: dict[str, Any]) -> list[dict[str, Any]]:
    """Every row scored on the faces all encoders share, as ``compare_to_truth``-like dicts: each single
    encoder, the best ensemble in-sample and held out, and the two baselines. Empty without an ensemble."""
    best = comparison.get("best_ensemble")
    if not best or best.get("thin"):
        return []
    n = best["n_faces"]
    rows = [{**row, "label": row["encoder"]} for row in comparison.get("common_rows") or []]
    rows.append({**best, "label": f"best ensemble {best['members']}, in-sample (chosen on these faces)"})
    rows.append({**_held(best), "label": _heldout_label(best)})
    for name, label in (("uniform", UNIFORM), ("marginal", MARGINAL)):
        scores = {key: best.get(f"{name}_{key}") for key in ("face_uniform", "emit_weighted")}
        rows.append({**scores, "n_faces": n, "label": label})
    return rows


def ensemble_table(comparison: dict[str, Any]) -> str:
    """The Markdown table of :func:`common_rows` (empty text without an ensemble)."""
    rows = common_rows(comparison)
    if not rows:
        return ""
    lines = [
        f"| on the {rows[0]['n_faces']} faces every encoder shares | face_uniform [95% CI] "
        "| emit_weighted [95% CI] | n_faces |",
        "|---|---|---|---|",
    ]
    for row in rows:
        uniform, weighted = _estimate(row, "face_uniform", ""), _estimate(row, "emit_weighted", "")
        lines.append(f"| {_cell(row['label'])} | {uniform} | {weighted} | {row['n_faces']} |")
    return "\n".join(lines) + "\n"


def _interval(row: dict[str, Any], key: str) -> str:
    return interval(row.get(f"{key}_lo"), row.get(f"{key}_hi"), missing=MISSING)


def _figure_path(figure: str, folder: Path) -> Path:
    # comparison.json records the paths as written; a relative one was relative to where compare ran.
    path = Path(figure)
    return path if path.is_file() else folder / path.name


def _report_row(row: dict[str, Any], label: str, **extra: str) -> dict[str, Any]:
    return {
        "encoder": label,
        "face-uniform": row.get("face_uniform"),
        "95% CI (uniform)": _interval(row, "face_uniform"),
        "emit-weighted": row.get("emit_weighted"),
        "95% CI (weighted)": _interval(row, "emit_weighted"),
        "n faces": row.get("n_faces"),
        **extra,
        "note": row.get("reason") or "",
    }


def _encoder_rows(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            _report_row(
                row,
                row["encoder"],
                faces=row.get("face_set", MISSING),
                **{"uniform baseline": _pair(row, "uniform"), "marginal baseline": _pair(row, "marginal")},
            )
            for row in rows
        ]
    )


def _ensemble_blocks(comparison: dict[str, Any]) -> list[str | Table | Figure]:
    best = comparison.get("best_ensemble")
    rows = common_rows(comparison)
    if not best or not rows:
        return []
    text = (
        f"Best ensemble by exhaustive subset search: {best['members']}. Chosen and scored on the same "
        f"{best['n_faces']} faces its emit-weighted similarity is {number(best['emit_weighted'])}, which "
        f"flatters it (the best of many noisy scores). Held out, chosen on half the faces "
        f"({best.get('heldout_n_select')}) and scored on the other half, over {best.get('heldout_splits')} "
        f"seeded halvings so that all {best.get('heldout_n_score')} faces are scored, it is "
        f"{_estimate(_held(best), 'emit_weighted', MISSING)} (share of folds that chose these members: "
        f"{number(best.get('heldout_agree'))}). Know-nothing encoders on the same faces: uniform "
        f"{number(best.get('uniform_emit_weighted'))}, the truth's marginal "
        f"{number(best.get('marginal_emit_weighted'))} (emit-weighted)."
    )
    if best.get("heldout_reason"):
        text += f" No held-out score: {best['heldout_reason']}."
    table = Table(
        pd.DataFrame([_report_row(row, row["label"]) for row in rows]),
        "Singles, the best ensemble and the baselines, all on the faces every encoder shares.",
    )
    return [text, table]


def _kinds_text(kinds: dict[str, str]) -> list[str]:
    """One sentence naming the kinds of encoder compared, where any is not a likelihood run."""
    present = list(dict.fromkeys(kinds.values()))
    if set(present) <= {"likelihood"}:
        return []
    what = "; ".join(f"{kind}: {KINDS.get(kind, kind)}" for kind in present)
    return [f"Encoders by kind (each name ends in its kind): {what}."]


def similarity_section(comparison: dict[str, Any], folder: Path | str) -> Section:
    """The comparison as a report section; ``folder`` holds ``comparison.json`` and its figures."""
    kinds = comparison.get("encoder_kinds") or {}
    title = (
        "Likelihood encoders and similarity to the emitted faces"
        if set(kinds.values()) <= {"likelihood"}
        else "Encoders and similarity to the emitted faces"
    )
    blocks: list[str | Table | Figure] = [
        f"Each encoder gives every face a distribution over the affect cells. Similarity to the ground truth "
        f"({comparison['truth']}: the cells in which the model actually emitted each face) is 1 minus the "
        f"Jensen-Shannon divergence in bits, averaged over shared faces either uniformly or weighted by how "
        f"often each face was emitted. Faces emitted at least {comparison['floor']} time(s); intervals are 95% "
        f"bootstrap intervals over faces ({comparison['n_boot']} resamples, seed {comparison['seed']}). "
        f"Each encoder is scored on its own faces ({FACE_SETS['own']}); beside it, on the same faces, the "
        f"scores of two encoders that know nothing: 1/k in every cell, and the truth's overall cell "
        f"distribution with the face's own emits left out (face-uniform / emit-weighted). An encoder that "
        f"does not beat both has not shown that it reads faces.",
        *_kinds_text(kinds),
        Table(_encoder_rows(comparison["rows"]), "Encoders against the emitted faces."),
        *_ensemble_blocks(comparison),
    ]
    for figure in comparison.get("figures", []):
        if str(figure).endswith(".png"):
            blocks.append(
                Figure(
                    _figure_path(figure, Path(folder)),
                    f"Left: pairwise similarity of all encoders on their shared faces among those emitted at "
                    f"least {comparison['floor']} time(s). Right: each encoder against the emitted faces, "
                    "with 95% intervals and the two baselines on its faces. High similarity means two "
                    "sources read faces into the same contexts, not that either reads the model's state.",
                )
            )
    return Section(title, blocks)
