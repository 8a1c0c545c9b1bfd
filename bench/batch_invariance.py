"""Measurement: how far elicitation depends on batch size, and why.

Runs the same prompts and samples through ``generate_batch`` in length-sorted batches of ``--small`` and of
``--large`` prompts (as the stage groups them), sampled and greedy, and compares them row by row: how many
replies differ, at which reply token the first difference arises, how large the logit differences are at the
steps where both runs had generated the same tokens so far, and, for each first difference, how close the
row's random draw sat to a token boundary of the inverse CDF (sampled) or how close the top two logits were
(greedy). Also compares ``h_first`` layer by layer, relative to each layer's scale.

    python bench/batch_invariance.py [--model smollm2-135m] [--prompts 32] [--samples 4] [--large 32]
"""

from __future__ import annotations

import argparse
from collections import Counter
from contextlib import contextmanager

import numpy as np
import torch

from affectlens import ElicitConfig, load_model
from affectlens.runtime import generate
from affectlens.runtime.render import Renderer
from affectlens.stages.elicit import generate_batch, resolve_layers
from affectlens.stimuli import load_prompts


@contextmanager
def recording(store: dict, reference: dict | None, stats: dict):
    """Patch the sampler: per (row seed, step) keep (logits, draw, token); compare with ``reference``."""
    real = generate.sample_tokens
    steps: Counter = Counter()
    diverged: set[int] = set()

    def sample(logits, generators, temperature):
        states = [g.get_state() for g in generators]
        tokens = real(logits, generators, temperature)
        for j, g in enumerate(generators):
            key = (g.initial_seed(), steps[g.initial_seed()])
            steps[g.initial_seed()] += 1
            draw = torch.rand((), generator=torch.Generator().set_state(states[j])).item()
            row = logits[j].detach().float().cpu().clone()
            store[key] = (row, draw, int(tokens[j]))
            if reference is not None and key in reference and key[0] not in diverged:
                other = reference[key][0]
                finite = torch.isfinite(row) & torch.isfinite(other)
                stats.setdefault("dlogit", []).append((row[finite] - other[finite]).abs().max().item())
                stats.setdefault("step", []).append(key[1])
                if reference[key][2] != int(tokens[j]):
                    diverged.add(key[0])
        return tokens

    generate.sample_tokens = sample
    try:
        yield
    finally:
        generate.sample_tokens = real


def run(handle, renderer, prompts, config, layers, size):
    """h_first [prompts, layers, d] in prompt order and the records, batching as the stage does."""
    order = sorted(range(len(prompts)), key=lambda i: len(renderer.encode(prompts[i].text)))
    hidden: dict[int, torch.Tensor] = {}
    records = []
    for start in range(0, len(order), size):
        batch = order[start : start + size]
        h, recs = generate_batch(handle, renderer, [prompts[i] for i in batch], config, layers)
        hidden.update({i: h[k] for k, i in enumerate(batch)})
        records += recs
    records.sort(key=lambda r: (r["prompt_id"], r["sample"]))
    return torch.stack([hidden[i] for i in range(len(prompts))]), records


def boundary_margin(row: torch.Tensor, draw: float, temperature: float) -> tuple[float, int]:
    """(distance of the scaled draw from the nearest CDF boundary, token) as ``sample_tokens`` computes it."""
    cdf = torch.softmax(row.float() / temperature, dim=-1).cumsum(dim=-1)
    x = draw * cdf[-1]
    token = int(torch.searchsorted(cdf, x[None]).clamp(max=len(cdf) - 1))
    low = cdf[token - 1] if token > 0 else torch.tensor(0.0)
    return min((x - low).item(), (cdf[token] - x).item()), token


def compare(name, handle, renderer, prompts, config, layers, small, large) -> None:
    ref_store: dict = {}
    with recording(ref_store, None, {}):
        h_small, a = run(handle, renderer, prompts, config, layers, small)
    stats: dict = {}
    store: dict = {}
    with recording(store, ref_store, stats):
        h_large, b = run(handle, renderer, prompts, config, layers, large)
    tok = handle.tokenizer
    differ = [(ra, rb) for ra, rb in zip(a, b, strict=True) if ra["reply"] != rb["reply"]]
    print(f"\n{name}: {len(a)} replies ({len(prompts)} prompts x {config.samples}), batch {small} vs {large}")
    faces = sum(ra["face"] != rb["face"] for ra, rb in zip(a, b, strict=True))
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
        while (
            store.get((seed, step), (None, None, -1))[2] == ref_store.get((seed, step), (None, None, -2))[2]
        ):
            step += 1
        first_steps.append(step)
        row_a, draw, tok_a = ref_store[(seed, step)]
        row_b, _, tok_b = store[(seed, step)]
        d = (row_a - row_b)[torch.isfinite(row_a)].abs().max().item()
        if config.temperature > 0:
            margin, _ = boundary_margin(row_a, draw, config.temperature)
            why = f"draw {margin:.1e} from a CDF boundary"
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
    prompts = everything[:: max(1, len(everything) // args.prompts)][: args.prompts]
    renderer = Renderer(handle.tokenizer)
    layers = resolve_layers(handle, None)
    print(f"{args.model} ({handle.dtype}, {handle.device}, {torch.get_num_threads()} threads)")
    sampled = ElicitConfig(samples=args.samples, max_new_tokens=args.max_new_tokens)
    compare("sampled, temperature 1", handle, renderer, prompts, sampled, layers, args.small, args.large)
    greedy = ElicitConfig(samples=1, temperature=0.0, max_new_tokens=args.max_new_tokens)
    compare("greedy", handle, renderer, prompts, greedy, layers, args.small, args.large)


if __name__ == "__main__":
    main()
