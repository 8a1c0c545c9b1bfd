"""``affectlens monitor``: read a model's replies, token by token, on the emotion vectors of a vectors run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

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
    user_errors,
)
from affectlens.config import DEFAULT_INSTRUCTION, MonitorConfig

M = MonitorConfig.default


@app.command()
@user_errors
def monitor(
    model: ModelSpec,
    vectors: Annotated[Path, typer.Option(help="A finished vectors run of the same model.")],
    out: Out,
    prompts: Prompts = None,
    layer: Annotated[
        int | None, typer.Option(help="Layer to read (default: the vectors run's headline layer).")
    ] = M("layer"),
    vector: Annotated[str, typer.Option(help="denoised or raw emotion vectors.")] = M("vector"),
    samples: Annotated[int, typer.Option(help="Replies per prompt.")] = M("samples"),
    max_new_tokens: int = M("max_new_tokens"),
    seed: int = M("seed"),
    temperature: float = M("temperature"),
    top_k: Annotated[int, TOP_K] = M("top_k"),
    top_p: Annotated[float, TOP_P] = M("top_p"),
    min_p: Annotated[float, MIN_P] = M("min_p"),
    instruction: Instruction = DEFAULT_INSTRUCTION,
    primed: Annotated[bool, typer.Option(help="Add neutral example exchanges that open with faces.")] = M(
        "primed"
    ),
    batch_prompts: Annotated[int, typer.Option(help="Prompts per batch (each with all its samples).")] = M(
        "batch_prompts"
    ),
    dtype: Dtype = None,
    device: Device = None,
    quantize: Quantize = None,
    quiet: Quiet = False,
) -> None:
    """Generate replies, then save every token's projection on each emotion vector (centred on the neutral
    mean, at one layer) and a figure of the readings along the reply."""
    from affectlens.api.monitor import READINGS_FIGURE
    from affectlens.api.monitor import monitor as run
    from affectlens.stages.monitor import check_vectors_run
    from affectlens.stimuli import load_prompts

    config = MonitorConfig(
        samples=samples, max_new_tokens=max_new_tokens, seed=seed, temperature=temperature, top_k=top_k,
        top_p=top_p, min_p=min_p, instruction=instruction, primed=primed, layer=layer, vector=vector,
        batch_prompts=batch_prompts,
    )  # fmt: skip
    prompt_set = load_prompts(prompts)  # a bad file or vectors folder fails before the model loads
    check_vectors_run(str(vectors))
    handle = api.load_model(model, dtype=dtype, device=device, quantize=quantize)
    summary = run(handle, out, vectors=vectors, prompts=prompt_set, config=config, quiet=quiet)
    print_monitor_summary(summary)
    console.print(f"wrote {out} (figure {out / READINGS_FIGURE}.png)", highlight=False)


def print_monitor_summary(summary: dict[str, Any], top: int = 3) -> None:
    """Counts and speed, then the emotions with the highest and lowest mean reading over reply tokens."""
    console.print(
        f"{summary['n_replies']} replies, {summary['n_tokens']} reply tokens, layer {summary['layer']} "
        f"({summary['vector']} vectors) in {summary['seconds']} s ({summary['tokens_per_second']} tokens/s)",
        highlight=False,
    )
    means = {k: v for k, v in summary["mean_reading"].items() if v is not None}
    if not means:
        console.print("no reply tokens to read", highlight=False)
        return
    ranked = sorted(means, key=means.__getitem__, reverse=True)
    high = ", ".join(f"{name} {means[name]:+.3g}" for name in ranked[:top])
    low = ", ".join(f"{name} {means[name]:+.3g}" for name in ranked[::-1][:top])
    console.print(f"mean reading over reply tokens, highest: {high}; lowest: {low}", highlight=False)
