"""Benchmark: steered elicitation against unsteered, on the same batches, in one run.

Both sides call the same ``generate_batch`` on the same length-sorted batches with the same per-row seeds;
the steered side has a :class:`~affectlens.runtime.steer.Steering` context open (one vector at the headline
layer, alpha 0.25 x n_L). Steering changes the replies, so it changes how many tokens are decoded; the bench
therefore also runs the hook at alpha 0, which does the same work as unsteered (identical replies) plus the
hook's cost. Rounds alternate (unsteered, alpha 0, alpha) so that drift in the machine's speed falls on all
three. Prints samples and generated tokens per second, the ratios to unsteered (goal: at least 0.95), and,
as a check that the hook is live, how many replies steering changed.

    python bench/steer.py [--model smollm2-135m] [--per-cell 2] [--samples 4] [--rounds 3] [--position all]
"""

from __future__ import annotations

import argparse
import time

import torch

from affectlens import load_model
from affectlens.config import ElicitConfig
from affectlens.conventions import headline_layer
from affectlens.runtime.render import Renderer
from affectlens.runtime.steer import Steering, mean_norms, steer_terms
from affectlens.stages.elicit import generate_batch
from affectlens.stimuli import load_prompts
from affectlens.stimuli.corpus import load_corpus

GOAL = 0.95


def elicit_all(handle, renderer, batches, config, layer) -> tuple[float, list[str], int]:
    """(seconds, replies, generated tokens) over every batch."""
    start = time.perf_counter()
    replies, tokens = [], 0
    for batch in batches:
        _, records = generate_batch(handle, renderer, batch, config, [layer])
        replies += [r["reply"] for r in records]
        tokens += sum(int(r["n_new_tokens"]) for r in records)
    return time.perf_counter() - start, replies, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--per-cell", type=int, default=2)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--alpha", type=float, default=0.25)
    parser.add_argument("--position", default="all", choices=["all", "prompt", "response"])
    parser.add_argument("--batch-prompts", type=int, default=32)
    args = parser.parse_args()

    torch.set_grad_enabled(False)
    handle = load_model(args.model)
    prompts = list(load_prompts().balanced(args.per_cell))
    renderer = Renderer(handle.tokenizer)
    order = sorted(prompts, key=lambda p: len(renderer.encode(p.text)))
    batches = [order[i : i + args.batch_prompts] for i in range(0, len(order), args.batch_prompts)]
    config = ElicitConfig(samples=args.samples)
    layer = headline_layer(handle.n_layers)
    n_l = mean_norms(handle, [layer], [d.text for d in load_corpus().neutral])
    vector = torch.randn(handle.d_model, generator=torch.Generator().manual_seed(0))
    steering = Steering(handle, steer_terms({layer: vector}, norms=n_l), args.alpha, args.position)
    n = len(prompts) * args.samples
    print(f"{args.model}: {len(prompts)} prompts x {args.samples} samples = {n} per round, {args.rounds} rounds, "
          f"layer {layer} (n_L {n_l[layer]:.1f}), alpha {args.alpha}, position {args.position}, "
          f"{torch.get_num_threads()} threads, {handle.device}")  # fmt: skip

    elicit_all(handle, renderer, batches[:1], config, layer)  # warm-up
    zero = Steering(handle, steer_terms({layer: vector}, norms=n_l), 0.0, args.position)
    seconds = dict.fromkeys(("unsteered", "alpha 0", f"alpha {args.alpha:g}"), 0.0)
    tokens = dict.fromkeys(seconds, 0)
    replies: dict[str, list[str]] = {}
    for _ in range(args.rounds):
        for name, context in zip(seconds, (None, zero, steering), strict=True):
            if context is None:
                took, replies[name], made = elicit_all(handle, renderer, batches, config, layer)
            else:
                with context:
                    took, replies[name], made = elicit_all(handle, renderer, batches, config, layer)
            seconds[name] += took
            tokens[name] += made
    total = n * args.rounds
    for name in seconds:
        sps, tps = total / seconds[name], tokens[name] / seconds[name]
        ratio = "" if name == "unsteered" else (
            f"  ratio {sps / (total / seconds['unsteered']):.3f} samples, "
            f"{tps / (tokens['unsteered'] / seconds['unsteered']):.3f} tokens"
        )  # fmt: skip
        print(f"{name:>11}: {seconds[name]:7.1f} s  {sps:6.2f} samples/s  {tps:7.1f} tokens/s{ratio}")
    same = replies["alpha 0"] == replies["unsteered"]
    changed = sum(a != b for a, b in zip(replies["unsteered"], replies[f"alpha {args.alpha:g}"], strict=True))
    print(f"goal: ratio >= {GOAL}; alpha 0 replies identical to unsteered: {same}; "
          f"replies changed at alpha {args.alpha:g}: {changed} of {n}")  # fmt: skip
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
