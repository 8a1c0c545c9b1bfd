"""Benchmark: affectlens elicitation against the straightforward reference, on the same prompts, in one run.

Reference: one ``model.generate(..., output_hidden_states=True)`` per sample at batch size 1, which recomputes
the prompt for every sample and always decodes to the token cap (or EOS). affectlens: batched prompts, one
prefill per prompt shared by its samples through the KV cache, ``h_first`` from that prefill, and early stop
once a reply's face is settled. Prints samples per second for both, their ratio, and the largest ``h_first``
difference relative to its layer's scale (the largest |h| of that prompt and layer): residual norms grow from
a few units in the first layers to hundreds in the last, so one elementwise tolerance fits no layer. Float32
rounding of batched against batch-1 kernels stays near 1e-6 of the scale; the bench fails above 1e-4, which
only a real disagreement (another position, layer or prompt) reaches.

    python bench/elicit.py [--model smollm2-135m] [--per-cell 2] [--samples 8]
"""

from __future__ import annotations

import argparse
import time

import torch

from affectlens import load_model
from affectlens.config import ElicitConfig
from affectlens.faces import extract_face
from affectlens.runtime.render import Renderer
from affectlens.stages.elicit import generate_batch, resolve_layers
from affectlens.stimuli import load_prompts

RELATIVE_TOLERANCE = 1e-4  # of each (prompt, layer)'s largest |h|


def reference(handle, renderer, prompts, samples: int, max_new_tokens: int) -> tuple[torch.Tensor, list[str]]:
    """h_first [prompts, layers, d] and the replies, one generate() per sample."""
    model, tokenizer = handle.model, handle.tokenizer
    # Block outputs only: without this the last entry of hidden_states has the final norm applied.
    model.config.tie_last_hidden_states = False
    states, replies = [], []
    for prompt in prompts:
        ids = torch.tensor([renderer.encode(prompt.text)])
        for sample in range(samples):
            torch.manual_seed(sample)
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                max_new_tokens=max_new_tokens,
                output_hidden_states=True,
                return_dict_in_generate=True,
                pad_token_id=tokenizer.pad_token_id,
            )
            replies.append(tokenizer.decode(out.sequences[0, ids.shape[1] :], skip_special_tokens=True))
            if sample == 0:
                prefill = out.hidden_states[0]  # step 0: the prompt pass; entry i + 1 is block i's output
                states.append(torch.stack([h[0, -1] for h in prefill[1:]]).float())
    return torch.stack(states), replies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--per-cell", type=int, default=2, help="prompts per cell")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--batch-prompts", type=int, default=8)
    args = parser.parse_args()

    torch.set_grad_enabled(False)
    handle = load_model(args.model)
    taken: dict[str, int] = {}
    prompts = []
    for prompt in load_prompts():
        if taken.get(prompt.cell, 0) < args.per_cell:
            taken[prompt.cell] = taken.get(prompt.cell, 0) + 1
            prompts.append(prompt)
    renderer = Renderer(handle.tokenizer)
    config = ElicitConfig(
        samples=args.samples, max_new_tokens=args.max_new_tokens, batch_prompts=args.batch_prompts
    )
    layers = resolve_layers(handle, None)
    n_samples = len(prompts) * args.samples
    print(
        f"{args.model}: {len(prompts)} prompts x {args.samples} samples = {n_samples} samples, "
        f"{torch.get_num_threads()} threads, {handle.device}"
    )

    start = time.perf_counter()
    ours, records = [], []
    for i in range(0, len(prompts), args.batch_prompts):
        hidden, batch_records = generate_batch(
            handle, renderer, prompts[i : i + args.batch_prompts], config, layers
        )
        ours.append(hidden)
        records += batch_records
    ours_s = time.perf_counter() - start
    h_ours = torch.cat(ours)

    start = time.perf_counter()
    h_ref, replies = reference(handle, renderer, prompts, args.samples, args.max_new_tokens)
    ref_s = time.perf_counter() - start

    # Per (prompt, layer): the largest |difference| over the width, over that layer's largest |h|.
    diff = (h_ours - h_ref).abs()
    scale = h_ref.abs().amax(dim=-1).clamp(min=1e-12)  # [prompts, layers]
    relative = diff.amax(dim=-1) / scale
    worst = divmod(int(relative.argmax()), relative.shape[1])
    ours_rate, ref_rate = n_samples / ours_s, n_samples / ref_s
    face_rate_ours = sum(r["face"] is not None for r in records) / n_samples
    face_rate_ref = sum(extract_face(r) is not None for r in replies) / n_samples
    print(f"reference : {ref_s:7.1f} s  {ref_rate:6.2f} samples/s  face rate {face_rate_ref:.3f}")
    print(f"affectlens: {ours_s:7.1f} s  {ours_rate:6.2f} samples/s  face rate {face_rate_ours:.3f}")
    print(f"speed-up  : {ours_rate / ref_rate:.1f}x")
    ok = relative.max().item() <= RELATIVE_TOLERANCE
    print(
        f"h_first max |difference| {diff.max().item():.2e} (max |h| {h_ref.abs().max().item():.1f}); "
        f"per layer, max |difference| / max |h| {relative.max().item():.2e} (prompt {worst[0]}, "
        f"layer {layers[worst[1]]}); {'ok' if ok else 'FAIL'}: tolerance {RELATIVE_TOLERANCE:.0e} of the scale"
    )
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
