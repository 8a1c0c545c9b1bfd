"""``affectlens persona``: LoRA fine-tuning on a Big Five trait, and the emoji that emerge from it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from affectlens.cli.common import Device, Dtype, ModelSpec, Out, Quantize, Quiet, app, console, user_errors
from affectlens.config import PersonaMeasureConfig, PersonaTrainConfig
from affectlens.errors import AffectlensError
from affectlens.reporting.format import interval, number

persona_app = typer.Typer(help="Personality fine-tuning (LoRA) and the emoji that emerge from it.",
                          no_args_is_help=True)  # fmt: skip
app.add_typer(persona_app, name="persona")
T, M = PersonaTrainConfig.default, PersonaMeasureConfig.default

Trait = Annotated[
    str, typer.Option(help="openness, conscientiousness, extraversion, agreeableness, neuroticism.")
]
CorpusFile = Annotated[Path | None, typer.Option(help="Trait corpus JSONL (default: the shipped one).")]


@persona_app.command("train")
@user_errors
def train(
    model: ModelSpec,
    out: Out,
    trait: Trait,
    pole: Annotated[str, typer.Option(help="high or low.")] = "high",
    control: Annotated[
        bool, typer.Option(help="Train on the neutral answers (the control adapter).")
    ] = False,
    rank: int = T("rank"),
    alpha: float = T("alpha"),
    dropout: float = T("dropout"),
    target_modules: Annotated[
        str, typer.Option(help="Comma-separated module names, or all-linear.")
    ] = "all-linear",
    learning_rate: float = T("learning_rate"),
    epochs: int = T("epochs"),
    batch_size: int = T("batch_size"),
    max_length: int = T("max_length"),
    seed: int = T("seed"),
    qlora: Annotated[
        bool | None, typer.Option(help="4-bit base (default: where CUDA and bitsandbytes are).")
    ] = None,
    corpus: CorpusFile = None,
    dtype: Dtype = None,
    device: Device = None,
    quiet: Quiet = False,
) -> None:
    """Fine-tune a LoRA adapter on one trait pole; the run folder is then a model spec (--model RUN)."""
    from affectlens.api.persona import persona_train

    if control and pole != "high":
        raise AffectlensError("--control trains on the neutral answers; it takes no --pole")
    config = PersonaTrainConfig(
        trait=trait, pole=pole, control=control, rank=rank, alpha=alpha, dropout=dropout,
        target_modules=tuple(m.strip() for m in target_modules.split(",") if m.strip()),
        learning_rate=learning_rate, epochs=epochs, batch_size=batch_size, max_length=max_length, seed=seed,
        qlora=qlora,
    )  # fmt: skip
    summary = persona_train(model, out, config, corpus=corpus, dtype=dtype, device=device, quiet=quiet)
    console.print(
        f"{summary['voice']} voice, {summary['n_train']} training answers, {config.epochs} epochs in "
        f"{summary['seconds']} s; held-out loss {summary['heldout_loss_before']} -> {summary['heldout_loss_after']} "
        f"({summary['trainable_parameters']} LoRA parameters{', QLoRA' if summary['qlora'] else ''})",
        highlight=False,
    )
    console.print(f"wrote {out}; use it as --model {out}", highlight=False)


def _num(key: str, value: float) -> str:
    """Emoji mass is often far below 0.001: it prints in scientific notation."""
    return f"{value:.2e}" if key.endswith("_mass") and value == value else number(value)


def _rate(entry: dict[str, Any], key: str = "") -> str:
    lo, hi = entry["ci"]
    return f"{_num(key, entry['value'])} [{_num(key, lo)}, {_num(key, hi)}]"


def print_comparison(result: dict[str, Any]) -> None:
    table = Table("model", "ESR", "replies with emoji", "kaomoji", "mass: first token", "mass: sentence ends",
                  "in-context emoji in top 50")  # fmt: skip
    for m in result["models"]:
        ic = m["in_context"]
        table.add_row(m["label"], _rate(m["esr"]), _rate(m["reply_emoji_rate"]), _rate(m["kaomoji_rate"]),
                      _rate(m["first_token_mass"], "_mass"), _rate(m["sentence_end_mass"], "_mass"),
                      f"{ic['emoji_in_top50']} {interval(*ic['ci'])}")  # fmt: skip
    console.print(table)
    for m in result["models"]:
        en = m["emoji_neurons"]
        console.print(f"{m['label']}: distinct emoji neurons, mean Jaccard {number(en['mean_jaccard'])} vs "
                      f"{number(en['null_mean'])} shuffled (p {number(en['p'], 4)}, {en['n_emoji']} emoji)",
                      highlight=False)  # fmt: skip
    for pair in result["pairs"]:
        parts = [f"{k} {_num(k, pair[k]['difference'])} (p {number(pair[k]['p'], 4)})"
                 for k in ("esr", "first_token_mass", "sentence_end_mass", "in_context")]  # fmt: skip
        console.print(f"{pair['b']} - {pair['a']}: " + "; ".join(parts), highlight=False)
    for row in result["neurons"]:
        deep = row["deepest"]
        console.print(
            f"neurons {row['a']} -> {row['b']}, layer {deep['layer']}: top {row['top']} shifted ∩ top emoji "
            f"{deep['overlap_before']} (random {number(deep['expected'])}, p {number(deep['p_before'], 4)})",
            highlight=False,
        )


@persona_app.command("measure")
@user_errors
def measure(
    model: ModelSpec,
    out: Out,
    trait: Trait,
    baseline: Annotated[
        str | None, typer.Option(help="A model spec or measure run to compare against.")
    ] = None,
    label: Annotated[
        str | None, typer.Option(help="Name in tables (default: from the adapter or spec).")
    ] = None,
    samples: int = M("samples"),
    temperature: float = M("temperature"),
    top_p: float = M("top_p"),
    max_new_tokens: int = M("max_new_tokens"),
    in_context_samples: int = M("in_context_samples"),
    in_context_tokens: int = M("in_context_tokens"),
    seed: int = M("seed"),
    batch_prompts: int = M("batch_prompts"),
    corpus: CorpusFile = None,
    dtype: Dtype = None,
    device: Device = None,
    quantize: Quantize = None,
    quiet: Quiet = False,
) -> None:
    """Emoji rates, emoji mass, the in-context test and MLP neurons on the held-out questions."""
    from affectlens.api.persona import persona_measure
    from affectlens.store.read import read_json

    config = PersonaMeasureConfig(
        trait=trait, samples=samples, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
        in_context_samples=in_context_samples, in_context_tokens=in_context_tokens, seed=seed,
        batch_prompts=batch_prompts,
    )  # fmt: skip
    summary = persona_measure(model, out, config, baseline=baseline, label=label, corpus=corpus, dtype=dtype,
                              device=device, quantize=quantize, quiet=quiet)  # fmt: skip
    console.print(f"{summary['n_replies']} replies to {summary['n_questions']} held-out questions; wrote {out}",
                  highlight=False)  # fmt: skip
    if "comparison" in summary:
        print_comparison(read_json(summary["comparison"]))


@persona_app.command("compare")
@user_errors
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Measure runs of one trait; the first is the base.")],
    out: Out,
    top: Annotated[int, typer.Option(help="Neurons in each top set.")] = 20,
    n_boot: int = 1000,
    n_permutations: int = 2000,
    seed: int = 0,
) -> None:
    """Rates with intervals, pairwise permutation tests and the neuron overlap, into OUT/persona.json."""
    from affectlens.api.persona import persona_compare

    print_comparison(
        persona_compare(runs, out, n_boot=n_boot, n_permutations=n_permutations, top=top, seed=seed)
    )
    console.print(f"wrote {out}", highlight=False)
