"""``affectlens steer``: elicitation under steering along emotion vectors, with random and orthogonal controls."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from affectlens import api
from affectlens.cli.common import (
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
from affectlens.config import DEFAULT_INSTRUCTION, SteerConfig
from affectlens.errors import AffectlensError

C = SteerConfig.default


def parse_floats(value: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise AffectlensError(f"{option} must be comma-separated numbers, got {value!r}") from None


def parse_band(value: str | None) -> tuple[int, ...] | None:
    """``L`` or ``a-b`` (inclusive) or ``a,b,c``."""
    if not value:
        return None
    try:
        if "-" in value.strip("-"):
            first, last = (int(x) for x in value.split("-"))
            return tuple(range(first, last + 1))
        return tuple(int(x) for x in value.split(","))
    except ValueError:
        raise AffectlensError(f"--layers must be L, a-b or a,b,c; got {value!r}") from None


@app.command()
@user_errors
def steer(
    model: ModelSpec,
    out: Out,
    vectors: Annotated[Path, typer.Option(help="A vectors run of the same model.")],
    emotion: Annotated[str, typer.Option(help="Emotion name(s) from the vectors run, comma-separated.")],
    alphas: Annotated[str, typer.Option(help="Comma-separated steering strengths.")] = ",".join(
        f"{a:g}" for a in C("alphas")
    ),
    layers: Annotated[
        str | None, typer.Option(help="Steered block(s): L or a-b (default: the vectors run's headline).")
    ] = None,
    random_controls: Annotated[int, typer.Option(help="Norm-matched random directions.")] = C(
        "random_controls"
    ),
    control_seed: int = C("control_seed"),
    orthogonal_controls: Annotated[
        bool, typer.Option(help="Also steer each emotion with the others projected out.")
    ] = C("orthogonal_controls"),
    unit: Annotated[str, typer.Option(help="norm: alpha x unit(v) x n_L; raw: alpha x v.")] = C("unit"),
    vector: Annotated[str, typer.Option(help="denoised or raw emotion vectors.")] = C("vector"),
    position: Annotated[str, typer.Option(help="all, prompt or response tokens.")] = C("position"),
    read_layer: Annotated[int | None, typer.Option(help="Layer whose h_first is projected.")] = None,
    force: Annotated[bool, typer.Option(help="Allow |alpha| beyond the sane bound.")] = False,
    coherence_per_cell: Annotated[
        int, typer.Option(help="Prompts per cell whose baseline reply NLL is measured.")
    ] = C("coherence_per_cell"),
    neutral_texts: Annotated[int, typer.Option(help="Neutral dialogues whose NLL is measured.")] = C(
        "neutral_texts"
    ),
    prompts: Prompts = None,
    per_cell: Annotated[int | None, typer.Option(help="Use the first N prompts of each cell.")] = None,
    samples: Annotated[int, typer.Option(help="Samples per prompt.")] = C("samples"),
    temperature: float = C("temperature"),
    top_p: float = C("top_p"),
    max_new_tokens: int = C("max_new_tokens"),
    seed: int = C("seed"),
    instruction: Instruction = DEFAULT_INSTRUCTION,
    primed: Annotated[bool, typer.Option(help="Neutral example exchanges that open with faces.")] = C(
        "primed"
    ),
    batch_prompts: int = C("batch_prompts"),
    dtype: Dtype = None,
    device: Device = None,
    quantize: Quantize = None,
    quiet: Quiet = False,
) -> None:
    """Elicit under steering: every direction x alpha, with random and orthogonal controls and coherence."""
    from affectlens.stimuli import load_prompts

    config = SteerConfig(
        emotions=tuple(e.strip() for e in emotion.split(",") if e.strip()),
        alphas=parse_floats(alphas, "--alphas"), steer_layers=parse_band(layers),
        random_controls=random_controls, control_seed=control_seed, orthogonal_controls=orthogonal_controls,
        unit=unit, vector=vector, position=position, read_layer=read_layer, force=force,
        coherence_per_cell=coherence_per_cell, neutral_texts=neutral_texts,
        samples=samples, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed,
        instruction=instruction, primed=primed, batch_prompts=batch_prompts,
    )  # fmt: skip
    prompt_set = load_prompts(prompts).balanced(per_cell)
    handle = api.load_model(model, dtype=dtype, device=device, quantize=quantize)
    summary = api.steer_sweep(handle, out, vectors=vectors, prompts=prompt_set, config=config, quiet=quiet)
    table = Table("direction", *(f"{a:g}" for a in sorted(config.alphas)), title="well-formed face rate")
    rates = summary["well_formed_rate"]
    base = rates.get("none@0")
    names = dict.fromkeys(key.rsplit("@", 1)[0] for key in rates if not key.startswith("none@"))
    for name in names:
        cells = [base if a == 0 else rates.get(f"{name}@{a:g}") for a in sorted(config.alphas)]
        table.add_row(name, *("-" if c is None else f"{c:.2f}" for c in cells))
    console.print(table)
    console.print(
        f"{summary['n_replies']} replies over {summary['n_conditions']} conditions at layers {summary['layers']} "
        f"(n_L {summary['n_L']}); {summary['seconds']} s ({summary['samples_per_second']} samples/s)",
        highlight=False,
    )
    console.print(f"wrote {out}", highlight=False)
