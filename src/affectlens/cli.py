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
ModelSpec = Annotated[str, typer.Option("--model", "-m", help="Bundled alias, hub id, model folder or .gguf file.")]
Out = Annotated[Path, typer.Option("--out", "-o", help="Run folder to write (resumed if it exists).")]
Dtype = Annotated[str | None, typer.Option(help="float32, bfloat16 or float16 (default: fp32 on CPU, bf16 on CUDA).")]
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
        table.add_row(row["alias"], row["description"], "yes" if row["installed"] else f"no: {row['install']}",
                      str(row["gguf_mb"]), "yes" if row["cached"] else "no", str(row["cache_mb"]))
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
    instruction: Annotated[str | None, typer.Option(help="System instruction (default: the kaomoji one).")] = None,
    primed: Annotated[bool, typer.Option(help="Add neutral example exchanges that open with faces.")] = False,
    suppress: Annotated[list[str] | None, typer.Option(help="A face to block, or 'emoji'; repeatable.")] = None,
    layers: Annotated[str, typer.Option(help="'all' or comma-separated layer indices.")] = "all",
    batch_prompts: Annotated[int, typer.Option(help="Prompts per batch (each with all its samples).")] = 8,
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
    config = ElicitConfig(samples=samples, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed,
                          instruction=instruction or DEFAULT_INSTRUCTION, primed=primed,
                          suppress=tuple(suppress or ()), layers=parse_layers(layers), batch_prompts=batch_prompts)
    handle = load_model(model, dtype=dtype, device=device)
    summary = run_elicit(handle, str(out), prompt_set, config, quiet=quiet)
    print_elicit_summary(summary)
    console.print(f"wrote {out}", highlight=False)


def print_elicit_summary(summary: dict[str, Any]) -> None:
    table = Table("cell", "n", "face rate", "top faces")
    for cell, row in summary["cells"].items():
        faces = "  ".join(f"{face} ×{count}" for face, count in row["top_faces"])
        table.add_row(cell, str(row["n"]), f"{row['face_rate']:.2f}", faces)
    console.print(table)
    console.print(
        f"face rate {summary['face_rate']:.3f} over {summary['n_samples']} samples, "
        f"{summary['n_distinct_faces']} distinct faces; {summary.get('seconds', 0)} s "
        f"({summary.get('samples_per_second', 0)} samples/s)", highlight=False)


def echo_json(data: Any) -> None:
    console.print_json(json.dumps(data, default=str))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
