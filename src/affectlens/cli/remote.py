"""Commands for API judges (introspect, synthesize), and the options every API-model command shares."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from affectlens import api
from affectlens.cli.common import Out, Quiet, app, console, user_errors
from affectlens.config import ApiConfig, IntrospectConfig, SynthesizeConfig

J, Y = IntrospectConfig.default, SynthesizeConfig.default
CONCURRENCY, MAX_RETRIES, TIMEOUT = (ApiConfig.default(k) for k in ("concurrency", "max_retries", "timeout"))
BaseUrl = Annotated[
    str | None,
    typer.Option(help="API endpoint (default: ANTHROPIC_BASE_URL / OPENAI_BASE_URL, or the vendor's)."),
]
Concurrency = Annotated[int, typer.Option(help="API requests in flight at once.")]
MaxRetries = Annotated[int, typer.Option(help="The SDK's retries of 408, 409, 429 and 5xx.")]
Timeout = Annotated[float, typer.Option(help="Seconds per API request.")]
Batch = Annotated[bool, typer.Option(help="Anthropic Message Batches: 50% cheaper, asynchronous, resumable.")]
Cache = Annotated[bool, typer.Option(help="Answer from the on-disk request cache first.")]
Prices = Annotated[Path | None, typer.Option(help="JSON {model prefix: [input, output] USD per MTok}.")]
DryRun = Annotated[bool, typer.Option(help="Count requests and estimate cost; send nothing.")]
StructuredOutput = Annotated[
    str, typer.Option(help="OpenAI-compatible endpoints: json_schema, or json_object for llama.cpp's server.")
]
Judge = Annotated[str, typer.Option("--judge", "-j", help="anthropic:MODEL or openai:MODEL.")]


def api_config(prices: Path | None, **options: Any) -> ApiConfig:
    """The ApiConfig from a command's API options (named as ApiConfig's fields)."""
    return ApiConfig(prices=str(prices) if prices else None, **options)


def print_plan(plan: dict[str, Any]) -> None:
    cost = plan["cost_usd_estimate"]
    console.print(
        f"dry run, nothing sent: {plan['requests']} requests to {plan['spec']}, {plan['cached']} already cached, "
        f"{plan['to_send']} to send; ~{plan['input_tokens_estimate']} input tokens, at most "
        f"{plan['output_tokens_at_most']} output tokens; estimated cost "
        + (f"${cost:.4f}" if cost is not None else "unknown (no price for this model; give --prices)"),
        highlight=False,
    )
    console.print(f"prompt caching: {plan['prompt_caching']}", highlight=False)


def print_requests(summary: dict[str, Any]) -> None:
    r = summary["requests"]
    cost = r["cost_usd_estimate"]
    console.print(
        f"requests: {r['sent']} sent, {r['from_cache']} from the cache, {r['failed_attempts']} failed attempts, "
        f"{r['sdk_retries']} SDK retries; tokens in {r['input_tokens']} (cached {r['cached_tokens']}), out "
        f"{r['output_tokens']}; cost ~" + (f"${cost:.4f}" if cost is not None else "unknown (no price)"),
        highlight=False,
    )


def print_judged(summary: dict[str, Any], out: Path) -> None:
    console.print(
        f"{summary['n_faces']} faces, {summary['n_answers']} answers ({summary['n_failed_answers']} failed); "
        f"faces without an answer: {len(summary['faces_without_answer'])}",
        highlight=False,
    )
    print_requests(summary)
    console.print(f"wrote {out}", highlight=False)


@app.command()
@user_errors
def introspect(
    judge: Judge,
    out: Out,
    faces: Annotated[
        str, typer.Option(help="'catalogue', a file (one face a line), or an elicitation run.")
    ] = ("catalogue"),
    method: Annotated[
        str, typer.Option(help="schema (a JSON distribution) or logprobs (label log-probs).")
    ] = J("method"),
    samples: Annotated[int, typer.Option(help="Answers per face.")] = J("samples"),
    temperature: Annotated[float | None, typer.Option(help="Default: the endpoint's.")] = None,
    max_tokens: int = J("max_tokens"),
    base_url: BaseUrl = None,
    concurrency: Concurrency = CONCURRENCY,
    max_retries: MaxRetries = MAX_RETRIES,
    timeout: Timeout = TIMEOUT,
    batch: Batch = False,
    cache: Cache = True,
    prices: Prices = None,
    structured_output: StructuredOutput = "json_schema",
    dry_run: DryRun = False,
    quiet: Quiet = False,
) -> None:
    """Show an API judge each bare face; read its distribution over the cells (an encoder run)."""
    config = IntrospectConfig(method=method, samples=samples, temperature=temperature, max_tokens=max_tokens)
    settings = api_config(
        prices,
        base_url=base_url,
        concurrency=concurrency,
        max_retries=max_retries,
        timeout=timeout,
        batch=batch,
        cache=cache,
        structured_output=structured_output,
    )
    summary = api.introspect(
        judge, out, faces=faces, config=config, api=settings, dry_run=dry_run, quiet=quiet
    )
    print_plan(summary) if dry_run else print_judged(summary, out)


@app.command()
@user_errors
def synthesize(
    judge: Judge,
    out: Out,
    contexts: Annotated[Path, typer.Option(help="An elicitation run: its faces in their contexts.")],
    contexts_per_face: int = Y("contexts_per_face"),
    samples: Annotated[int, typer.Option(help="Answers per context.")] = Y("samples"),
    max_words: int = Y("max_words"),
    temperature: Annotated[float | None, typer.Option(help="Default: the endpoint's.")] = None,
    seed: int = Y("seed"),
    base_url: BaseUrl = None,
    concurrency: Concurrency = CONCURRENCY,
    max_retries: MaxRetries = MAX_RETRIES,
    timeout: Timeout = TIMEOUT,
    batch: Batch = False,
    cache: Cache = True,
    prices: Prices = None,
    structured_output: StructuredOutput = "json_schema",
    dry_run: DryRun = False,
    quiet: Quiet = False,
) -> None:
    """Bag-of-lexicon encoder: an API judge picks 1-3 lexicon words for each face in its contexts."""
    config = SynthesizeConfig(contexts_per_face=contexts_per_face, samples=samples, max_words=max_words,
                              temperature=temperature, seed=seed)  # fmt: skip
    settings = api_config(
        prices,
        base_url=base_url,
        concurrency=concurrency,
        max_retries=max_retries,
        timeout=timeout,
        batch=batch,
        cache=cache,
        structured_output=structured_output,
    )
    summary = api.synthesize(judge, out, contexts=contexts, config=config, api=settings, dry_run=dry_run,
                             quiet=quiet)  # fmt: skip
    if dry_run:
        print_plan(summary)
        return
    console.print(f"top words: {summary['top_words']}", highlight=False)
    print_judged(summary, out)
