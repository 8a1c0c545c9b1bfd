"""The affectlens command line: thin; parses arguments, calls the API, prints.

User errors (AffectlensError) print one line and exit 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from affectlens.errors import AffectlensError

app = typer.Typer(
    help="Does a language model's kaomoji track its internal state? Elicit, score, analyze, report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
ModelSpec = Annotated[
    str, typer.Option("--model", "-m", help="Bundled alias, hub id, model folder or .gguf file.")
]
Out = Annotated[Path, typer.Option("--out", "-o", help="Run folder to write (resumed if it exists).")]
Dtype = Annotated[
    str | None, typer.Option(help="float32, bfloat16 or float16 (default: fp32 on CPU, bf16 on CUDA).")
]
Device = Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: cuda when available).")]


def user_errors(command: F) -> F:
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except AffectlensError as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted; run the same command again to resume")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def parse_layers(value: str) -> tuple[int, ...] | None:
    if value in ("", "all"):
        return None
    try:
        return tuple(int(part) for part in value.split(","))
    except ValueError:
        raise AffectlensError(f"--layers must be 'all' or comma-separated integers, got {value!r}") from None


@app.command()
@user_errors
def models() -> None:
    """List the bundled models: installed, cached, sizes."""
    from affectlens.runtime.loading import bundled_status, cache_dir

    table = Table("alias", "description", "installed", "GGUF MB", "cached", "cache MB")
    for row in bundled_status():
        table.add_row(
            row["alias"],
            row["description"],
            "yes" if row["installed"] else f"no: {row['install']}",
            str(row["gguf_mb"]),
            "yes" if row["cached"] else "no",
            str(row["cache_mb"]),
        )
    console.print(table)
    console.print(f"cache: {cache_dir()}", highlight=False)


@app.command()
@user_errors
def elicit(
    model: ModelSpec,
    out: Out,
    prompts: Annotated[Path | None, typer.Option(help="Prompt JSONL (default: the shipped set).")] = None,
    samples: Annotated[int, typer.Option(help="Samples per prompt.")] = 8,
    temperature: float = 1.0,
    max_new_tokens: int = 24,
    seed: int = 0,
    instruction: Annotated[
        str | None, typer.Option(help="System instruction (default: the kaomoji one).")
    ] = None,
    primed: Annotated[bool, typer.Option(help="Add neutral example exchanges that open with faces.")] = False,
    suppress: Annotated[
        list[str] | None, typer.Option(help="A face to block, or 'emoji'; repeatable.")
    ] = None,
    layers: Annotated[str, typer.Option(help="'all' or comma-separated layer indices.")] = "all",
    batch_prompts: Annotated[int, typer.Option(help="Prompts per batch (each with all its samples).")] = 32,
    dtype: Dtype = None,
    device: Device = None,
    quiet: Quiet = False,
) -> None:
    """Ask a model to open replies with a kaomoji; record faces and h_first."""
    from affectlens import load_model
    from affectlens.runtime.render import DEFAULT_INSTRUCTION
    from affectlens.stages.elicit import ElicitConfig
    from affectlens.stages.elicit import elicit as run_elicit
    from affectlens.stimuli import load_prompts

    prompt_set = load_prompts(prompts)
    config = ElicitConfig(
        samples=samples,
        temperature=temperature,
        max_new_tokens=max_new_tokens,
        seed=seed,
        instruction=instruction or DEFAULT_INSTRUCTION,
        primed=primed,
        suppress=tuple(suppress or ()),
        layers=parse_layers(layers),
        batch_prompts=batch_prompts,
    )
    handle = load_model(model, dtype=dtype, device=device)
    summary = run_elicit(handle, str(out), prompt_set, config, quiet=quiet)
    print_elicit_summary(summary)
    console.print(f"wrote {out}", highlight=False)


def resolve_faces(source: str) -> list[str]:
    """--faces: 'catalogue', a file of faces (one a line), or an elicitation run folder (its emitted faces)."""
    from affectlens.analysis.encoders import emitted_faces
    from affectlens.stimuli import load_catalogue

    if source == "catalogue":
        return load_catalogue()
    path = Path(source)
    if path.is_dir():
        return emitted_faces(source)
    return load_catalogue(path)


@app.command()
@user_errors
def likelihood(
    model: ModelSpec,
    out: Out,
    faces: Annotated[
        str, typer.Option(help="'catalogue', a file (one face a line), or an elicitation run.")
    ] = "catalogue",
    prompts: Annotated[Path | None, typer.Option(help="Prompt JSONL (default: the shipped set).")] = None,
    primed: Annotated[bool, typer.Option(help="Score after the primed prefix elicitation used.")] = False,
    instruction: Annotated[
        str | None, typer.Option(help="System instruction (default: the kaomoji one).")
    ] = None,
    aggregation: Annotated[
        str, typer.Option(help="bayes (mean probability) or meanlogp (mean log-prob).")
    ] = "bayes",
    dtype: Dtype = None,
    device: Device = None,
    quiet: Quiet = False,
) -> None:
    """Score log P(face | prompt) for every face and prompt; per-face cell distributions."""
    from affectlens import load_model
    from affectlens.runtime.render import DEFAULT_INSTRUCTION
    from affectlens.stages.likelihood import LikelihoodConfig
    from affectlens.stages.likelihood import likelihood as run_likelihood
    from affectlens.stimuli import load_prompts

    prompt_set = load_prompts(prompts)
    vocabulary = resolve_faces(faces)
    config = LikelihoodConfig(
        instruction=instruction or DEFAULT_INSTRUCTION, primed=primed, aggregation=aggregation
    )
    handle = load_model(model, dtype=dtype, device=device)
    summary = run_likelihood(
        handle, str(out), vocabulary, prompt_set, config, faces_source=faces, quiet=quiet
    )
    emission = summary["emission"]
    console.print(
        f"{summary['n_faces']} faces x {summary['n_prompts']} prompts in {summary['seconds']} s "
        f"({summary['pairs_per_second']} pairs/s); top cells: {summary['top_cell_counts']}",
        highlight=False,
    )
    console.print(
        f"expected face-to-cell agreement if limited to this vocabulary: {emission['expected_agreement']:.3f} "
        f"(chance {emission['chance']:.3f}, n = {emission['n_prompts']} prompts)",
        highlight=False,
    )
    console.print(f"wrote {out}", highlight=False)


@app.command()
@user_errors
def compare(
    truth: Annotated[Path, typer.Option(help="Elicitation run whose emitted faces are the ground truth.")],
    encoders: Annotated[list[Path], typer.Option(help="Likelihood or elicitation runs; repeatable.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the comparison.")],
    floor: Annotated[int, typer.Option(help="Keep faces emitted at least this many times.")] = 1,
    n_boot: int = 1000,
    seed: int = 0,
) -> None:
    """Jensen-Shannon similarity of encoders to the emitted faces, pairwise, and the best ensemble."""
    from affectlens.analysis.encoders import compare as run_compare

    result = run_compare(
        str(truth), [str(e) for e in encoders], str(out), floor=floor, n_boot=n_boot, seed=seed
    )
    console.print(f"ground truth: {result['truth']} (faces emitted >= {floor} times)", highlight=False)
    console.print(result["markdown"], highlight=False, markup=False)
    best = result.get("best_ensemble")
    if best and not best.get("thin"):
        console.print(
            f"best ensemble: {best['members']} (emit-weighted {best['emit_weighted']:.3f}, "
            f"n = {best['n_faces']} faces)",
            highlight=False,
        )
    console.print(f"wrote {out}", highlight=False)


@app.command()
@user_errors
def analyze(
    runs: Annotated[list[Path], typer.Argument(help="Elicitation run folders (one per model).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for analysis.json and figures.")],
    n_permutations: Annotated[int, typer.Option(help="Label shuffles for the headline p-values.")] = 1000,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples over prompts.")] = 1000,
    layer: Annotated[
        int | None, typer.Option(help="Headline layer (default: two thirds of the way down).")
    ] = None,
    floor: Annotated[int, typer.Option(help="Faces need this many samples to enter face analyses.")] = 3,
    seed: int = 0,
    quiet: Quiet = False,
) -> None:
    """Hidden -> cell, face -> cell, hidden -> face, geometry and cross-model alignment, with statistics."""
    from affectlens.analysis.kaomoji import analyze as run_analyze

    result = run_analyze(
        [str(r) for r in runs],
        str(out),
        n_permutations=n_permutations,
        n_boot=n_boot,
        seed=seed,
        layer=layer,
        floor=floor,
        quiet=quiet,
    )
    print_headlines(result)
    console.print(f"wrote {out / 'analysis.json'}", highlight=False)


@app.command()
@user_errors
def vectors(
    model: ModelSpec,
    out: Out,
    corpus: Annotated[Path | None, typer.Option(help="Corpus folder (default: the shipped one).")] = None,
    layers: Annotated[str, typer.Option(help="'all' or comma-separated layer indices.")] = "all",
    offset: Annotated[int, typer.Option(help="Average each story from this token on.")] = 50,
    denoise_variance: Annotated[float, typer.Option(help="Neutral variance to project out.")] = 0.5,
    analyze: Annotated[bool, typer.Option(help="Also run the emotion analyses into OUT/analysis.")] = True,
    elicitation: Annotated[
        Path | None, typer.Option(help="Elicitation run of the same model: the bridge.")
    ] = None,
    n_permutations: int = 1000,
    dtype: Dtype = None,
    device: Device = None,
    quiet: Quiet = False,
) -> None:
    """Emotion vectors from stories (mean from token 50, minus the grand mean, neutral-denoised); analyses."""
    from affectlens import load_model
    from affectlens.analysis.emotions import analyze_vectors
    from affectlens.stages.vectors import vectors as run_vectors
    from affectlens.stimuli.corpus import load_corpus

    loaded = load_corpus(corpus)
    handle = load_model(model, dtype=dtype, device=device)
    summary = run_vectors(
        handle,
        str(out),
        loaded,
        layers=parse_layers(layers),
        offset=offset,
        denoise_variance=denoise_variance,
        quiet=quiet,
    )
    console.print(f"vectors: {summary}", highlight=False)
    if analyze:
        result = analyze_vectors(
            str(out),
            str(out / "analysis"),
            n_permutations=n_permutations,
            elicitation_run=str(elicitation) if elicitation else None,
        )
        console.print(f"wrote {out / 'analysis' / 'emotions.json'} ({len(result)} sections)", highlight=False)
    console.print(f"wrote {out}", highlight=False)


stories_app = typer.Typer(help="Emotion-story corpora.", no_args_is_help=True)
app.add_typer(stories_app, name="stories")


@stories_app.command("generate")
@user_errors
def stories_generate(
    model: ModelSpec,
    out: Out,
    corpus: Annotated[
        Path | None, typer.Option(help="Source of emotions, topics, neutral and implicit (default: shipped).")
    ] = None,
    per_topic: Annotated[int, typer.Option(help="Stories per emotion and topic.")] = 1,
    min_words: int = 80,
    max_words: int = 150,
    max_attempts: Annotated[int, typer.Option(help="Tries per story before giving up on it.")] = 4,
    temperature: float = 0.9,
    max_new_tokens: int = 320,
    seed: int = 0,
    dtype: Dtype = None,
    device: Device = None,
    quiet: Quiet = False,
) -> None:
    """Let a model write its own story corpus: banned words, cut-off and short stories rejected and retried."""
    from affectlens import load_model
    from affectlens.stages.stories import StoryConfig, generate_stories
    from affectlens.stimuli.corpus import load_corpus

    config = StoryConfig(per_topic, min_words, max_words, max_attempts, temperature, max_new_tokens, seed)
    source = load_corpus(corpus)
    handle = load_model(model, dtype=dtype, device=device)
    summary = generate_stories(handle, str(out), source, config, quiet=quiet)
    outcomes = ", ".join(f"{k} {v}" for k, v in summary["outcomes"].items())
    console.print(
        f"{summary['stories']} of {summary['wanted']} stories in {summary['attempts']} attempts ({outcomes})"
    )
    if summary["short_of_target"]:
        short = ", ".join(f"{e} -{n}" for e, n in summary["short_of_target"].items())
        console.print(f"short of one story per topic: {short}", highlight=False)
    console.print(f"wrote corpus {out} (use: affectlens vectors --corpus {out})", highlight=False)


def print_headlines(result: dict[str, Any]) -> None:
    from affectlens.report.render import format_number as f

    table = Table("model", "hidden -> cell", "face -> cell", "coverage")
    for label, run in result.get("runs", {}).items():
        hidden = run.get("hidden_to_cell", {}).get("headline", {})
        face = run.get("face_to_cell", {})
        table.add_row(label, _estimate(hidden, f), _estimate(face, f), f(face.get("coverage")))
    console.print(table)


def _estimate(result: dict[str, Any], f) -> str:
    if not result or result.get("thin"):
        return f"thin: {result.get('reason', 'no data')}" if result else "–"
    lo, hi = result.get("accuracy_ci", (None, None))
    p = result.get("p_value")
    return f"{f(result['accuracy'])} [{f(lo)}, {f(hi)}] p={f(p)} n={result.get('n')}"


@app.command()
@user_errors
def report(
    paths: Annotated[list[Path], typer.Argument(help="Run, analysis, comparison or study folders.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for report.html and report.md.")],
    title: str = "affectlens report",
) -> None:
    """One self-contained HTML report (figures embedded) and a Markdown twin."""
    from affectlens.report.build import build_report

    html = build_report(*paths, out=out, title=title)
    console.print(f"wrote {html}", highlight=False)


@app.command()
@user_errors
def study(
    path: Annotated[Path, typer.Argument(help="Study YAML: models, stimuli, stages.")],
    quiet: Quiet = False,
) -> None:
    """Run a study file: whatever is missing, then comparison, analysis and the report."""
    from affectlens.study import load_study, run_study

    result = run_study(load_study(path), quiet=quiet, log=lambda m: console.print(m, highlight=False))
    if "report" in result:
        console.print(f"report: {result['report']}", highlight=False)


@app.command()
@user_errors
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Study folder.")] = Path("runs/demo"),
    quiet: Quiet = False,
) -> None:
    """The built-in study: both bundled models, elicitation, likelihood, comparison, analysis, report."""
    import time

    from affectlens.study import demo_study, run_study

    started = time.perf_counter()
    result = run_study(demo_study(str(out)), quiet=quiet, log=lambda m: console.print(m, highlight=False))
    analysis = out / "analysis" / "analysis.json"
    if analysis.exists():
        print_headlines(json.loads(analysis.read_text()))
    console.print(f"demo finished in {time.perf_counter() - started:.0f} s", highlight=False)
    console.print(f"report: {result['report']}", highlight=False)


def print_elicit_summary(summary: dict[str, Any]) -> None:
    table = Table("cell", "n", "face rate", "top faces")
    for cell, row in summary["cells"].items():
        faces = "  ".join(f"{face} ×{count}" for face, count in row["top_faces"])
        table.add_row(cell, str(row["n"]), f"{row['face_rate']:.2f}", faces)
    console.print(table)
    console.print(
        f"face rate {summary['face_rate']:.3f} over {summary['n_samples']} samples, "
        f"{summary['n_distinct_faces']} distinct faces; {summary.get('seconds', 0)} s "
        f"({summary.get('samples_per_second', 0)} samples/s)",
        highlight=False,
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
