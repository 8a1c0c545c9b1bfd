"""The affectlens command line: thin; parses arguments, calls the API, prints. Defaults come from
:mod:`affectlens.config`.

User errors (AffectlensError) print one line and exit 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape as rich_escape

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
Prompts = Annotated[Path | None, typer.Option(help="Prompt JSONL (default: the shipped set).")]
Instruction = Annotated[str, typer.Option(help="System instruction.")]
TOP_K = typer.Option(help="Keep the k most likely tokens (0: off).")
TOP_P = typer.Option(help="Keep the smallest set of tokens with this probability mass (1: off).")
MIN_P = typer.Option(help="Drop tokens below min-p x the top token's probability (0: off).")
Dtype = Annotated[
    str | None, typer.Option(help="float32, bfloat16 or float16 (default: fp32 on CPU, bf16 on CUDA).")
]
Device = Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: cuda when available).")]
Quantize = Annotated[
    str | None, typer.Option(help="4bit or 8bit: load through bitsandbytes (CUDA only), for large models.")
]


def user_errors(command: F) -> F:
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except AffectlensError as exc:
            # The message is text, not markup: "[ray]" in "pip install 'affectlens[ray]'" must survive.
            err.print(f"[bold red]error:[/] {rich_escape(str(exc))}", highlight=False, soft_wrap=True)
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
