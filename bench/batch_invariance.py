"""Measurement: how far elicitation depends on batch size, and why.

Runs the elicitation stage on the same prompts and samples with ``batch_prompts`` = ``--small`` and
``--large``, sampled and greedy, and compares the two runs row by row: how many replies differ, at which reply
token the first difference arises, how large the logit differences are at the steps where both runs had
generated the same tokens so far, and, for each first difference, how close the row's random draw sat to a
token boundary of the inverse CDF (sampled) or how close the top two logits were (greedy). Also compares
``h_first`` layer by layer, relative to each layer's scale.

    python bench/batch_invariance.py [--model smollm2-135m] [--prompts 32] [--samples 4] [--large 32]
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from contextlib import contextmanager

import numpy as np
import pandas as pd
import torch

from affectlens import ElicitConfig, load_model
from affectlens.runtime import generate
from affectlens.stages.elicit import elicit
from affectlens.stimuli import PromptSet, load_prompts
from affectlens.store.runs import read_elicit


@contextmanager
def recording(store: dict, reference: dict | None, stats: dict):
    """Patch ``Sampling.draw``: per (row seed, step) keep (logits, draw, token, cdf); compare with ``reference``.

    ``cdf`` is the row's unnormalised CDF as the sampler builds it (None when greedy).
    """
    real = generate.Sampling.draw
    steps: Counter = Counter()
    diverged: set[int] = set()

    def draw(sampling, logits, generators):
        states = [g.get_state() for g in generators]
        tokens = real(sampling, logits, generators)
        cdf = sampling.probabilities(logits).cumsum(dim=-1).cpu() if sampling.temperature > 0 else None
        for j, g in enumerate(generators):
            key = (g.initial_seed(), steps[g.initial_seed()])
            steps[g.initial_seed()] += 1
            u = torch.rand((), generator=torch.Generator().set_state(states[j])).item()
            row = logits[j].detach().float().cpu().clone()
            store[key] = (row, u, int(tokens[j]), None if cdf is None else cdf[j].clone())
            if reference is not None and key in reference and key[0] not in diverged:
                other = reference[key][0]
                finite = torch.isfinite(row) & torch.isfinite(other)
                stats.setdefault("dlogit", []).append((row[finite] - other[finite]).abs().max().item())
                if reference[key][2] != int(tokens[j]):
                    diverged.add(key[0])
        return tokens

    generate.Sampling.draw = draw
    try:
        yield
    finally:
        generate.Sampling.draw = real


def run(handle, prompts: PromptSet, config: ElicitConfig, size: int) -> tuple[torch.Tensor, list[dict]]:
    """h_first [prompts, layers, d] and the generations, in prompt order, from the stage itself."""
    with tempfile.TemporaryDirectory() as out:
        elicit(handle, out, prompts, config.model_copy(update={"batch_prompts": size}), quiet=True)
        result = read_elicit(out)
    return result.h_first, result.generations.to_dict("records")


def boundary_margin(cdf: torch.Tensor, u: float) -> float:
    """How far the scaled draw lies from the nearest boundary of the row's CDF (as the sampler scales it)."""
    return (cdf - u * cdf[-1]).abs().min().item()


def _same(x, y) -> bool:
    """Equal, with no face (None or NaN, as parquet gives it back) equal to no face."""
    return (pd.isna(x) and pd.isna(y)) or x == y


def compare(name, handle, prompts: PromptSet, config: ElicitConfig, small: int, large: int) -> None:
    ref_store: dict = {}
    with recording(ref_store, None, {}):
        h_small, a = run(handle, prompts, config, small)
    stats: dict = {}
    store: dict = {}
    with recording(store, ref_store, stats):
        h_large, b = run(handle, prompts, config, large)
    tok = handle.tokenizer
    differ = [(ra, rb) for ra, rb in zip(a, b, strict=True) if ra["reply"] != rb["reply"]]
    print(f"\n{name}: {len(a)} replies ({len(prompts)} prompts x {config.samples}), batch {small} vs {large}")
    faces = sum(not _same(ra["face"], rb["face"]) for ra, rb in zip(a, b, strict=True))
    print(f"  replies that differ: {len(differ)} ({len(differ) / len(a):.1%}); faces that differ: {faces}")
    dl = np.array(stats.get("dlogit", [0.0]))
    print(
        f"  |logit difference| at steps with equal history: max {dl.max():.2e}, median {np.median(dl):.2e}, "
        f"over {len(dl)} row-steps"
    )
    scale = h_small.abs().amax(dim=-1).clamp(min=1e-12)  # [prompts, layers]
    rel = ((h_large - h_small).abs().amax(dim=-1) / scale).max().item()
    print(
        f"  h_first: max |difference| {(h_large - h_small).abs().max().item():.2e}, "
        f"max per-layer relative {rel:.2e}"
    )
    seeds = {
        (p.id, s): generate.row_seed(config.seed, p.id, s) for p in prompts for s in range(config.samples)
    }
    first_steps = []
    for ra, _ in differ:
        seed = seeds[(ra["prompt_id"], ra["sample"])]
        step = 0
        while store[(seed, step)][2] == ref_store[(seed, step)][2]:
            step += 1
        first_steps.append(step)
        row_a, u, tok_a, cdf_a = ref_store[(seed, step)]
        row_b, _, tok_b, _ = store[(seed, step)]
        d = (row_a - row_b)[torch.isfinite(row_a)].abs().max().item()
        if cdf_a is not None:
            why = f"draw {boundary_margin(cdf_a, u):.1e} from a CDF boundary"
        else:
            top = torch.topk(row_a, 2).values
            why = f"top-2 logit gap {(top[0] - top[1]).item():.1e}"
        print(
            f"    {ra['prompt_id']}#{ra['sample']}: first difference at reply token {step} "
            f"({tok.decode([tok_a])!r} vs {tok.decode([tok_b])!r}); max |dlogit| there {d:.1e}; {why}"
        )
    if first_steps:
        print(f"  first differing reply token: {sorted(first_steps)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompts", type=int, default=32, help="prompts, spread evenly over the set")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--small", type=int, default=1)
    parser.add_argument("--large", type=int, default=32)
    parser.add_argument("--dtype", default=None)
    args = parser.parse_args()

    torch.set_grad_enabled(False)
    handle = load_model(args.model, dtype=args.dtype)
    everything = list(load_prompts())
    chosen = everything[:: max(1, len(everything) // args.prompts)][: args.prompts]
    prompts = PromptSet(tuple(chosen), "bench", "bench")
    print(f"{args.model} ({handle.dtype}, {handle.device}, {torch.get_num_threads()} threads)")
    sampled = ElicitConfig(samples=args.samples, max_new_tokens=args.max_new_tokens)
    compare("sampled, temperature 1", handle, prompts, sampled, args.small, args.large)
    greedy = ElicitConfig(samples=1, temperature=0.0, max_new_tokens=args.max_new_tokens)
    compare("greedy", handle, prompts, greedy, args.small, args.large)


if __name__ == "__main__":
    main()
