"""Commands that run a model: models, elicit, likelihood, vectors, stories generate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from affectlens import api
from affectlens.cli.common import (
    MIN_P,
    TOP_K,
    TOP_P,
    Device,
    Dtype,
    Instruction,
    ModelSpec,
    Out,
    Prompts,
    Quantize,
    Quiet,
    app,
    console,
    parse_layers,
    user_errors,
)
from affectlens.cli.remote import (
    CONCURRENCY,
    MAX_RETRIES,
    TIMEOUT,
    BaseUrl,
    Batch,
    Cache,
    Concurrency,
    DryRun,
    MaxRetries,
    Prices,
    Timeout,
    api_config,
    print_plan,
    print_requests,
)
from affectlens.config import (
    DEFAULT_INSTRUCTION,
    AnalysisConfig,
    ElicitConfig,
    LikelihoodConfig,
    StoryConfig,
    VectorsConfig,
)
from affectlens.errors import AffectlensError
from affectlens.reporting.format import number
from affectlens.runtime.providers.base import is_api_spec

E, L, V, S = ElicitConfig.default, LikelihoodConfig.default, VectorsConfig.default, StoryConfig.default


@app.command()
@user_errors
def models() -> None:
    """List the bundled models: installed, cached, sizes."""
    from affectlens.runtime.loading import bundled_status, cache_dir

    table = Table("alias", "description", "installed", "GGUF MB", "cached", "cache MB")
    for row in bundled_status():
        installed = "yes" if row["installed"] else f"no: {row['install']}"
        cached = "yes" if row["cached"] else "no"
        table.add_row(
            row["alias"], row["description"], installed, str(row["gguf_mb"]), cached, str(row["cache_mb"])
        )
    console.print(table)
    console.print(f"cache: {cache_dir()}", highlight=False)


@app.command()
@user_errors
def elicit(
    model: ModelSpec,
    out: Out,
    prompts: Prompts = None,
    per_cell: Annotated[int | None, typer.Option(help="Use the first N prompts of each cell.")] = None,
    samples: Annotated[int, typer.Option(help="Samples per prompt.")] = E("samples"),
    temperature: float = E("temperature"),
    top_k: Annotated[int, TOP_K] = E("top_k"),
    top_p: Annotated[float, TOP_P] = E("top_p"),
    min_p: Annotated[float, MIN_P] = E("min_p"),
    max_new_tokens: int = E("max_new_tokens"),
    seed: int = E("seed"),
    instruction: Instruction = DEFAULT_INSTRUCTION,
    primed: Annotated[bool, typer.Option(help="Add neutral example exchanges that open with faces.")] = E(
        "primed"
    ),
    suppress: Annotated[
        list[str] | None, typer.Option(help="A face to block, or 'emoji'; repeatable.")
    ] = None,
    layers: Annotated[str, typer.Option(help="'all' or comma-separated layer indices.")] = "all",
    batch_prompts: Annotated[int, typer.Option(help="Prompts per batch (each with all its samples).")] = E(
        "batch_prompts"
    ),
    dtype: Dtype = None,
    device: Device = None,
    quantize: Quantize = None,
    base_url: BaseUrl = None,
    concurrency: Concurrency = CONCURRENCY,
    max_retries: MaxRetries = MAX_RETRIES,
    timeout: Timeout = TIMEOUT,
    batch: Batch = False,
    cache: Cache = True,
    prices: Prices = None,
    dry_run: DryRun = False,
    quiet: Quiet = False,
) -> None:
    """Ask a model to open replies with a kaomoji; record faces and h_first (none for API models)."""
    config = ElicitConfig(
        samples=samples, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
        max_new_tokens=max_new_tokens, seed=seed,
        instruction=instruction, primed=primed, suppress=tuple(suppress or ()), layers=parse_layers(layers),
        batch_prompts=batch_prompts,
    )  # fmt: skip
    from affectlens.stimuli import load_prompts

    prompt_set = load_prompts(prompts).balanced(per_cell)  # a bad file fails before the model loads
    if is_api_spec(model):
        settings = api_config(
            prices,
            base_url=base_url,
            concurrency=concurrency,
            max_retries=max_retries,
            timeout=timeout,
            batch=batch,
            cache=cache,
        )
        summary = api.elicit(model, out, prompts=prompt_set, config=config, api=settings, dry_run=dry_run,
                             quiet=quiet)  # fmt: skip
        if dry_run:
            print_plan(summary)
            return
        print_elicit_summary(summary)
        print_requests(summary)
    else:
        if base_url or batch or dry_run:
            raise AffectlensError(
                "--base-url, --batch and --dry-run are for API models (anthropic:, openai:)"
            )
        handle = api.load_model(model, dtype=dtype, device=device, quantize=quantize)
        summary = api.elicit(handle, out, prompts=prompt_set, config=config, quiet=quiet)
        print_elicit_summary(summary)
    console.print(f"wrote {out}", highlight=False)


@app.command()
@user_errors
def likelihood(
    model: ModelSpec,
    out: Out,
    faces: Annotated[
        str, typer.Option(help="'catalogue', a file (one face a line), or an elicitation run.")
    ] = ("catalogue"),
    prompts: Prompts = None,
    primed: Annotated[bool, typer.Option(help="Score after the primed prefix elicitation used.")] = L(
        "primed"
    ),
    instruction: Instruction = DEFAULT_INSTRUCTION,
    aggregation: Annotated[
        str, typer.Option(help="bayes (mean probability) or meanlogp (mean log-prob).")
    ] = L("aggregation"),
    dtype: Dtype = None,
    device: Device = None,
    quantize: Quantize = None,
    quiet: Quiet = False,
) -> None:
    """Score log P(face | prompt) for every face and prompt; per-face cell distributions."""
    from affectlens.stimuli import load_catalogue, load_prompts

    config = LikelihoodConfig(instruction=instruction, primed=primed, aggregation=aggregation)
    prompt_set = load_prompts(prompts)
    if faces != "catalogue" and not Path(faces).is_dir():
        load_catalogue(faces)  # a bad file fails before the model loads
    handle = api.load_model(model, dtype=dtype, device=device, quantize=quantize)
    summary = api.likelihood(handle, out, faces=faces, prompts=prompt_set, config=config, quiet=quiet)
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
def vectors(
    model: ModelSpec,
    out: Out,
    corpus: Annotated[Path | None, typer.Option(help="Corpus folder (default: the shipped one).")] = None,
    layers: Annotated[str, typer.Option(help="'all' or comma-separated layer indices.")] = "all",
    offset: Annotated[int, typer.Option(help="Average each story from this token on.")] = V("offset"),
    denoise_variance: Annotated[float, typer.Option(help="Neutral variance to project out.")] = V(
        "denoise_variance"
    ),
    analyze: Annotated[bool, typer.Option(help="Also run the emotion analyses into OUT/analysis.")] = True,
    elicitation: Annotated[
        Path | None, typer.Option(help="Elicitation run of the same model: the bridge.")
    ] = None,
    n_permutations: int = AnalysisConfig.default("n_permutations"),
    dtype: Dtype = None,
    device: Device = None,
    quantize: Quantize = None,
    quiet: Quiet = False,
) -> None:
    """Emotion vectors from stories (mean from token 50, minus the grand mean, neutral-denoised); analyses."""
    from affectlens.stimuli.corpus import load_corpus

    config = VectorsConfig(layers=parse_layers(layers), offset=offset, denoise_variance=denoise_variance)
    loaded = load_corpus(corpus)
    handle = api.load_model(model, dtype=dtype, device=device, quantize=quantize)
    summary = api.vectors(handle, out, corpus=loaded, config=config, quiet=quiet)
    console.print(f"vectors: {summary}", highlight=False)
    if analyze:
        from affectlens.api.emotions import analyze_emotions
        from affectlens.cli.analyses import print_emotion_headlines

        result = analyze_emotions(
            str(out), str(out / "analysis"), n_permutations=n_permutations,
            elicitation_run=str(elicitation) if elicitation else None,
        )  # fmt: skip
        print_emotion_headlines({handle.spec: result})
        console.print(f"wrote {out / 'analysis' / 'emotions.json'}", highlight=False)
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
    per_topic: Annotated[int, typer.Option(help="Stories per emotion and topic.")] = S("stories_per_topic"),
    min_words: int = S("min_words"),
    max_words: int = S("max_words"),
    max_attempts: Annotated[int, typer.Option(help="Tries per story before giving up on it.")] = S(
        "max_attempts"
    ),
    temperature: float = S("temperature"),
    top_k: Annotated[int, TOP_K] = S("top_k"),
    top_p: Annotated[float, TOP_P] = S("top_p"),
    min_p: Annotated[float, MIN_P] = S("min_p"),
    max_new_tokens: int = S("max_new_tokens"),
    seed: int = S("seed"),
    dtype: Dtype = None,
    device: Device = None,
    quantize: Quantize = None,
    quiet: Quiet = False,
) -> None:
    """Let a model write its own story corpus: banned words, cut-off and short stories rejected and retried."""
    from affectlens.stages.stories import generate_stories
    from affectlens.stimuli.corpus import load_corpus

    config = StoryConfig(
        stories_per_topic=per_topic, min_words=min_words, max_words=max_words, max_attempts=max_attempts,
        temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, max_new_tokens=max_new_tokens, seed=seed,
    )  # fmt: skip
    source = load_corpus(corpus)
    handle = api.load_model(model, dtype=dtype, device=device, quantize=quantize)
    summary = generate_stories(handle, str(out), source, config, quiet=quiet)
    outcomes = ", ".join(f"{k} {v}" for k, v in summary["outcomes"].items())
    console.print(
        f"{summary['stories']} of {summary['wanted']} stories in {summary['attempts']} attempts ({outcomes})"
    )
    if summary["short_of_target"]:
        short = ", ".join(f"{e} -{n}" for e, n in summary["short_of_target"].items())
        console.print(f"short of one story per topic: {short}", highlight=False)
    console.print(f"wrote corpus {out} (use: affectlens vectors --corpus {out})", highlight=False)


def print_elicit_summary(summary: dict[str, Any]) -> None:
    table = Table("cell", "n", "bracket or emoji", "well-formed", "top faces")
    for cell, row in summary["cells"].items():
        faces = "  ".join(f"{face} ×{count}" for face, count in row["top_faces"])
        table.add_row(
            cell, str(row["n"]), f"{row['face_rate']:.2f}", number(row.get("well_formed_rate"), 2), faces
        )
    console.print(table)
    console.print(
        f"opens with a bracket or emoji {summary['face_rate']:.3f}, well-formed face "
        f"{number(summary.get('well_formed_rate'))}, over {summary['n_samples']} samples, "
        f"{summary['n_distinct_faces']} distinct faces; {summary.get('seconds', 0)} s "
        f"({summary.get('samples_per_second', 0)} samples/s)",
        highlight=False,
    )
