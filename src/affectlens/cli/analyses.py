"""Commands that read run folders only: compare, analyze, report, study, demo."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from affectlens import api
from affectlens.cli.common import Quiet, app, console, user_errors
from affectlens.config import AnalysisConfig
from affectlens.reporting.format import estimate, headline, number

A = AnalysisConfig.default


@app.command()
@user_errors
def compare(
    truth: Annotated[Path, typer.Option(help="Elicitation run whose emitted faces are the ground truth.")],
    encoders: Annotated[list[Path], typer.Option(help="Likelihood or elicitation runs; repeatable.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the comparison.")],
    floor: Annotated[int, typer.Option(help="Keep faces emitted at least this many times.")] = A(
        "compare_floor"
    ),
    n_boot: int = A("n_boot"),
    seed: int = A("seed"),
) -> None:
    """Jensen-Shannon similarity of encoders to the emitted faces, pairwise, and the best ensemble."""
    from affectlens.api.compare import compare as run_compare

    result = run_compare(
        str(truth), [str(e) for e in encoders], str(out), floor=floor, n_boot=n_boot, seed=seed
    )
    print_comparison(result, floor)
    console.print(f"wrote {out}", highlight=False)


def print_comparison(result: dict[str, Any], floor: int) -> None:
    """The comparison's tables (each row with the uniform and truth-marginal baselines on its faces) and
    the best ensemble, held out first: its in-sample score was chosen on the same faces and flatters it."""
    console.print(f"ground truth: {result['truth']} (faces emitted >= {floor} times)", highlight=False)
    # soft_wrap: a table row wider than the terminal stays one line rather than breaking mid-cell.
    console.print(result["markdown"], highlight=False, markup=False, soft_wrap=True)
    best = result.get("best_ensemble")
    if best and not best.get("thin"):
        held = (best.get("heldout_emit_weighted_lo"), best.get("heldout_emit_weighted_hi"))
        held_text = estimate(best.get("heldout_emit_weighted"), held)
        if best.get("heldout_thin"):
            held_text = f"n/a ({best.get('heldout_reason')})"
        console.print(
            f"best ensemble: {best['members']} (emit-weighted, n = {best['n_faces']} common faces): "
            f"held out {held_text} (chosen on {best.get('heldout_n_select')} faces, "
            f"{best.get('heldout_splits')} seeded halvings, seed {best.get('heldout_seed')}); "
            f"in-sample {number(best['emit_weighted'])}; baselines: uniform "
            f"{number(best.get('uniform_emit_weighted'))}, truth marginal "
            f"{number(best.get('marginal_emit_weighted'))}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


@app.command()
@user_errors
def analyze(
    runs: Annotated[list[Path], typer.Argument(help="Elicitation, likelihood or vectors run folders.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for analysis.json and figures.")],
    n_permutations: Annotated[int, typer.Option(help="Label shuffles for the headline p-values.")] = A(
        "n_permutations"
    ),
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples over prompts.")] = A("n_boot"),
    layer: Annotated[
        int | None, typer.Option(help="Headline layer (default: two thirds of the way down).")
    ] = None,
    floor: Annotated[int, typer.Option(help="Faces need this many samples to enter face analyses.")] = A(
        "floor"
    ),
    faces: Annotated[str, typer.Option(help="well_formed (the default) or all: which faces count.")] = A(
        "faces"
    ),
    compare_floor: Annotated[int, typer.Option(help="Comparison: faces emitted at least this often.")] = A(
        "compare_floor"
    ),
    seed: int = A("seed"),
    quiet: Quiet = False,
) -> None:
    """Each run by its kind: kaomoji analyses of elicitation runs (hidden -> cell, face -> cell, hidden -> face,
    geometry, alignment), likelihood runs against the first elicitation run, emotion analyses of vectors runs."""
    config = AnalysisConfig(
        n_permutations=n_permutations, n_boot=n_boot, layer=layer, floor=floor, faces=faces,
        compare_floor=compare_floor, seed=seed,
    )  # fmt: skip
    result = api.analyze(runs, out, config=config, quiet=quiet)
    if "kaomoji" in result:
        print_headlines(result["kaomoji"])
        console.print(f"wrote {out / 'analysis.json'}", highlight=False)
    if "comparison" in result:
        print_comparison(result["comparison"], config.compare_floor)
        console.print(f"wrote {out / 'comparison'}", highlight=False)
    if "emotions" in result:
        print_emotion_headlines(result["emotions"])
        console.print(f"wrote {out / 'emotions'}", highlight=False)


def print_headlines(result: dict[str, Any]) -> None:
    table = Table("model", "hidden -> cell", "face -> cell", "coverage")
    for label, run in result.get("runs", {}).items():
        block = run.get("hidden_to_cell", {})
        hidden = block.get("headline") or block  # an API run's block is a skip, with its reason
        face = run.get("face_to_cell", {})
        table.add_row(label, headline(hidden), headline(face), number(face.get("coverage")))
    console.print(table)


def print_emotion_headlines(results: dict[str, dict[str, Any]]) -> None:
    table = Table("model", "layer", "probe -> emotion", "implicit top-3")
    for label, result in results.items():
        top3 = result.get("implicit", {}).get("top3")
        implicit = estimate(top3["accuracy"], (top3.get("lo"), top3.get("hi"))) if top3 else number(None)
        probe = headline(result.get("probe", {}).get("headline", {}))
        table.add_row(label, number(result.get("layer")), probe, implicit)
    console.print(table)


@app.command()
@user_errors
def report(
    paths: Annotated[list[Path], typer.Argument(help="Run, analysis, comparison or study folders.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for report.html and report.md.")],
    title: str = "affectlens report",
) -> None:
    """One self-contained HTML report (figures embedded) and a Markdown twin."""
    console.print(f"wrote {api.report(*paths, out=out, title=title)}", highlight=False)


@app.command()
@user_errors
def study(
    path: Annotated[Path, typer.Argument(help="Study YAML: models, stimuli, stages.")],
    executor: Annotated[
        str, typer.Option(help="local (this process) or ray (each model's shards on Ray actors).")
    ] = "local",
    address: Annotated[
        str | None, typer.Option(help="Ray cluster to join (from `ray start --head`; 'auto': the local one).")
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Run a study file: whatever is missing, then comparison, analysis and the report."""
    from affectlens.study import load_study, run_study

    result = run_study(load_study(path), executor=executor, address=address, quiet=quiet,
                       log=lambda m: console.print(m, highlight=False))  # fmt: skip
    if "report" in result:
        console.print(f"report: {result['report']}", highlight=False)


@app.command()
@user_errors
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Study folder.")] = Path("runs/demo"),
    quiet: Quiet = False,
) -> None:
    """The built-in study: both bundled models, elicitation, likelihood, comparison, analysis, report."""
    from affectlens.store.read import read_json
    from affectlens.store.runs import KAOMOJI_ANALYSIS
    from affectlens.study import demo_study, run_study

    started = time.perf_counter()
    result = run_study(demo_study(str(out)), quiet=quiet, log=lambda m: console.print(m, highlight=False))
    analysis = out / "analysis" / KAOMOJI_ANALYSIS
    if analysis.exists():
        print_headlines(read_json(analysis))
    console.print(f"demo finished in {time.perf_counter() - started:.0f} s", highlight=False)
    console.print(f"report: {result['report']}", highlight=False)
