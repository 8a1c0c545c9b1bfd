"""Encoders from run folders, and their comparison with the faces a model actually emitted.

An elicitation run is an encoder through its emissions (each face's empirical cell distribution, with its emit
count); a likelihood run is an LM-head encoder (``face_cells.parquet``). Both load into the one table shape of
``affectlens.analysis.similarity``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from affectlens.analysis import similarity
from affectlens.cells import default_cells
from affectlens.errors import AffectlensError
from affectlens.store.atomic import write_json, write_parquet
from affectlens.store.manifest import RunStore
from affectlens.store.read import read_parquet


def load_encoder(run: str) -> tuple[str, pd.DataFrame]:
    """(name, encoder table) of a run folder: its likelihood stage if it has one, else its emissions."""
    store = RunStore(run)
    stages = store.manifest().get("stages", {})
    cells = default_cells()
    if stages.get("likelihood", {}).get("finished"):
        spec = stages["likelihood"]["identity"]["model"]["spec"]
        frame = read_parquet(store.root / "face_cells.parquet").set_index("face")[cells.codes]
        frame = frame.div(frame.sum(axis=1), axis=0)
        frame["n"] = 0
        return f"{spec} (likelihood)", frame
    if stages.get("elicit", {}).get("finished"):
        spec = stages["elicit"]["identity"]["model"]["spec"]
        generations = read_parquet(store.root / "generations.parquet")
        return f"{spec} (emitted)", similarity.emission_encoder(generations)
    raise AffectlensError(f"{run} has no finished likelihood or elicit stage to read faces from")


def emitted_faces(run: str) -> list[str]:
    """The faces an elicitation run emitted, most frequent first."""
    store = RunStore(run)
    store.require("elicit")
    faces = read_parquet(store.root / "generations.parquet")["face"].dropna()
    if faces.empty:
        raise AffectlensError(f"{run} emitted no faces")
    return list(faces.value_counts().index)


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} #{seen[name]}")
    return out


def compare(
    truth_run: str, encoder_runs: list[str], out: str, *, floor: int = 1, n_boot: int = 1000, seed: int = 0
) -> dict[str, object]:
    """Each encoder against the emission ground truth, pairwise similarity, and the best ensemble."""
    truth_name, truth = load_encoder(truth_run)
    if truth["n"].sum() == 0:
        raise AffectlensError(f"--truth {truth_run} must be an elicitation run (emitted faces with counts)")
    loaded = [load_encoder(run) for run in encoder_runs]
    names = _unique([name for name, _ in loaded])
    encoders = dict(zip(names, [frame for _, frame in loaded], strict=True))
    rows = []
    for name, frame in encoders.items():
        result = similarity.compare_to_truth(frame, truth, floor=floor, n_boot=n_boot, seed=seed)
        rows.append({"encoder": name, **result})
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(rows)
    write_parquet(folder / "similarity.parquet", table)
    pairwise = similarity.pairwise_similarity({truth_name: truth, **encoders})
    markdown = similarity.markdown_table(rows)
    (folder / "similarity.md").write_text(markdown, encoding="utf-8")
    figures = similarity.similarity_figure(pairwise, rows, folder / "similarity")
    result: dict[str, object] = {
        "truth": truth_name,
        "floor": floor,
        "n_boot": n_boot,
        "seed": seed,
        "rows": rows,
        "pairwise": pairwise.round(4).to_dict(),
        "figures": [str(p) for p in figures],
        "markdown": markdown,
    }
    if len(encoders) >= 2:
        try:
            search = similarity.subset_search(encoders, truth, floor=floor, n_boot=n_boot, seed=seed)
            write_parquet(folder / "ensembles.parquet", search)
            result["best_ensemble"] = search.iloc[0].to_dict()
            lookup = similarity.lookup_table(
                {n: encoders[n] for n in str(search.iloc[0]["members"]).split(",")}
            )
            write_parquet(folder / "lookup.parquet", lookup.reset_index())
        except AffectlensError as exc:
            result["best_ensemble"] = {"thin": True, "reason": str(exc)}
    write_json(folder / "comparison.json", result)
    return result
