"""Benchmark: affectlens face likelihood against the obvious reference, on the same prompts and faces, in one run.

Reference: one full forward pass of prefix + face for every (prompt, face) pair, normalised in float64 (a
float32 log-softmax over a 49k vocabulary is biased by about 2e-5 per token). It is run on a subset of
faces and its time per pair extrapolated to all pairs (said so in the output). affectlens: one prefix pass
per prompt (after the template and instruction that all prompts share, cached once), then the faces' tokens
as tries in short rows with tree attention, and the LM head read in vocabulary blocks. Prints pairs per
second, the ratio, the largest log-probability difference (must be below 1e-4), and the projected time for
the full default set.

    python bench/likelihood.py [--model smollm2-135m] [--prompts 6] [--reference-faces 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from affectlens import load_model
from affectlens.config import LikelihoodConfig
from affectlens.runtime.face_scoring import max_nodes, score_prompt, shared_head
from affectlens.runtime.render import Renderer
from affectlens.stimuli import load_catalogue, load_prompts


def reference(handle, renderer: Renderer, message: str, faces: list[str]) -> np.ndarray:
    """log P(face | prompt) by a full forward pass of the joined text per face."""
    prefix_text = renderer.render(message)
    prefix = renderer.encode(message)
    scores = []
    for face in faces:
        ids = handle.tokenizer(
            prefix_text + renderer.reply_prefix + face, add_special_tokens=not renderer.chat
        )["input_ids"]
        n = 0
        while n < len(prefix) and ids[n] == prefix[n]:
            n += 1
        with torch.no_grad():
            logits = handle.model(torch.tensor([ids])).logits[0].double()
        logp = torch.log_softmax(logits, dim=-1)
        total = sum(logp[j - 1, ids[j]].item() for j in range(n, len(ids)))
        if n < len(prefix):  # a merged boundary: divide out the prompt tail the merge replaced
            with torch.no_grad():
                tail_logits = handle.model(torch.tensor([prefix])).logits[0].double()
            tail = torch.log_softmax(tail_logits, dim=-1)
            total -= sum(tail[j - 1, prefix[j]].item() for j in range(n, len(prefix)))
        scores.append(total)
    return np.array(scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--reference-faces", type=int, default=20, help="faces per prompt for the reference")
    args = parser.parse_args()

    handle = load_model(args.model)
    renderer = Renderer(handle.tokenizer)
    all_prompts = list(load_prompts())
    prompts = all_prompts[:: max(1, len(all_prompts) // args.prompts)][: args.prompts]
    faces = load_catalogue()
    subset = faces[:: max(1, len(faces) // args.reference_faces)][: args.reference_faces]
    print(
        f"{args.model}: {len(prompts)} prompts x {len(faces)} faces; reference on {len(subset)} faces per prompt, "
        f"extrapolated per pair; {torch.get_num_threads()} threads"
    )

    nodes = max_nodes(handle, LikelihoodConfig().memory_mb)  # the pass size the stage uses
    shared = shared_head(handle, renderer, [p.text for p in all_prompts])  # once per run, as in the stage
    score_prompt(
        handle, renderer, all_prompts[1].text, faces, nodes, shared=shared
    )  # warm-up: a long run is warm
    start = time.perf_counter()
    ours = [score_prompt(handle, renderer, p.text, faces, nodes, shared=shared) for p in prompts]
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    ref = [reference(handle, renderer, p.text, subset) for p in prompts]
    ref_s = time.perf_counter() - start

    index = [faces.index(f) for f in subset]
    diff = max(float(np.abs(o[index] - r).max()) for o, r in zip(ours, ref, strict=True))
    ours_rate = len(prompts) * len(faces) / ours_s
    ref_rate = len(prompts) * len(subset) / ref_s
    full_pairs = len(all_prompts) * len(faces)
    print(f"reference : {ref_rate:8.1f} pairs/s (measured on {len(prompts) * len(subset)} pairs)")
    print(f"affectlens: {ours_rate:8.1f} pairs/s (measured on {len(prompts) * len(faces)} pairs)")
    print(f"speed-up  : {ours_rate / ref_rate:.1f}x")
    print(
        f"full default set ({len(all_prompts)} prompts x {len(faces)} faces): "
        f"{full_pairs / ours_rate / 60:.1f} min projected (reference: {full_pairs / ref_rate / 60:.0f} min)"
    )
    print(f"log P max |difference|: {diff:.2e} ({'ok' if diff < 1e-4 else 'FAIL'}: tolerance 1e-4)")
    if diff >= 1e-4:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
