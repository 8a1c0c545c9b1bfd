"""Measurement: the well-formed face rate of the bundled models over a grid of sampling settings, primed.

Each cell of the grid (temperature x top-p) elicits the same tuning prompts with the same seeds; the plain
setting (temperature 1, top-p 1) is the reference in the same run. The tuning prompts are disjoint from the
demo's: the demo elicits the first 6 prompts of each cell of the shipped set, so the grid uses prompts 7-9 of
each cell (27 prompts). The rate's 95% interval is a percentile bootstrap over prompts (samples of a prompt
share it), n = prompts x samples. Runs are resumable folders under --out.

    python bench/sampling_grid.py [--samples 4] [--out runs/sampling-grid]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools

import affectlens
from affectlens.config import ElicitConfig
from affectlens.stats import bootstrap_ci
from affectlens.stimuli import PromptSet, content_hash, load_prompts
from affectlens.store.runs import read_generations, well_formed_mask

TEMPERATURES = (0.5, 0.8, 1.0)
TOP_PS = (0.8, 0.95, 1.0)
DEMO_PER_CELL, TUNING_PER_CELL = 6, 3


def tuning_prompts() -> PromptSet:
    """Prompts DEMO_PER_CELL+1 .. DEMO_PER_CELL+TUNING_PER_CELL of each cell: never seen by the demo."""
    shipped = load_prompts()
    seen: dict[str, int] = {}
    chosen = []
    for prompt in shipped:
        seen[prompt.cell] = seen.get(prompt.cell, 0) + 1
        if DEMO_PER_CELL < seen[prompt.cell] <= DEMO_PER_CELL + TUNING_PER_CELL:
            chosen.append(prompt)
    source = f"{shipped.source} (prompts {DEMO_PER_CELL + 1}-{DEMO_PER_CELL + TUNING_PER_CELL} of each cell)"
    return PromptSet(
        tuple(chosen), content_hash(dataclasses.asdict(p) for p in chosen), source, shipped.cells
    )


def rate(run: str, n_boot: int = 1000) -> tuple[float, float, float, int, int]:
    """(well-formed rate, lo, hi, n samples, distinct well-formed faces)."""
    generations = read_generations(run)
    well = well_formed_mask(generations).to_numpy(dtype=float)
    prompts = generations["prompt_id"].to_numpy()
    lo, hi = bootstrap_ci(lambda idx: well[idx].mean(), prompts, n_boot=n_boot, seed=0)
    distinct = generations["face"][well_formed_mask(generations)].nunique()
    return float(well.mean()), lo, hi, len(generations), int(distinct)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--out", default="runs/sampling-grid")
    args = parser.parse_args()
    prompts = tuning_prompts()
    print(f"{len(prompts)} tuning prompts x {args.samples} samples, primed; {prompts.source}")
    print("| model | temperature | top-p | well-formed rate [95% CI] | n | distinct well-formed |")
    print("|---|---|---|---|---|---|")
    for spec in args.models:
        model = affectlens.load_model(spec)
        for temperature, top_p in itertools.product(TEMPERATURES, TOP_PS):
            run = f"{args.out}/{spec}/t{temperature}-p{top_p}"
            config = ElicitConfig(samples=args.samples, primed=True, temperature=temperature, top_p=top_p)
            affectlens.elicit(model, run, prompts=prompts, config=config, quiet=True)
            value, lo, hi, n, distinct = rate(run)
            print(
                f"| {spec} | {temperature} | {top_p} | {value:.3f} [{lo:.3f}, {hi:.3f}] | {n} | {distinct} |"
            )


if __name__ == "__main__":
    main()
