"""The steering hook: exact at alpha 0, equal to a hand-written residual addition on every family, the same
cached and uncached, batched and single-row, and gone when its context closes."""

from __future__ import annotations

import pytest
import torch
from conftest import available_families, tiny_handle
from transformers import DynamicCache

from affectlens.errors import AffectlensError
from affectlens.runtime.capture import position_ids
from affectlens.runtime.steer import Steering, mean_norms, steer_terms
from affectlens.runtime.tokens import left_pad

LAYER = 1


def forward(handle, ids, mask, **kwargs):
    return handle.model(
        input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), use_cache=False, **kwargs
    )


def direction(handle, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(handle.d_model, generator=g)


def batch(tokenizer, texts=("a calm morning at home", "the train was late again and the rain kept on")):
    return left_pad([tokenizer(t)["input_ids"] for t in texts], tokenizer.pad_token_id)


def hooks_left(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.fixture(scope="module")
def handle(tokenizer):
    return tiny_handle(tokenizer, "llama")


def test_alpha_zero_is_bit_identical(handle, tokenizer):
    ids, mask = batch(tokenizer)
    plain = forward(handle, ids, mask).logits
    for position in ("all", "prompt", "response"):
        with Steering(handle, steer_terms({LAYER: direction(handle)}, unit="raw"), 0.0, position):
            steered = forward(handle, ids, mask).logits
        assert torch.equal(plain, steered), position


@pytest.mark.parametrize("family", available_families())
def test_parity_with_a_hand_written_addition(tokenizer, family):
    """The hook gives what patching block L's forward to add the vector gives, through output_hidden_states:
    layer L moves by exactly delta at every real token, and every later layer and the logits agree."""
    handle = tiny_handle(tokenizer, family)
    ids, mask = batch(tokenizer)
    v = direction(handle)
    alpha = 0.7
    terms = steer_terms({LAYER: v}, unit="norm", norms={LAYER: 3.0})
    plain = forward(handle, ids, mask, output_hidden_states=True)
    with Steering(handle, terms, alpha):
        hooked = forward(handle, ids, mask, output_hidden_states=True)

    block = handle.arch.blocks[LAYER]
    original = block.forward
    delta = alpha * 3.0 * v / v.norm()

    def patched(*args, **kwargs):
        out = original(*args, **kwargs)
        return (out[0] + delta, *out[1:]) if isinstance(out, tuple) else out + delta

    block.forward = patched
    try:
        by_hand = forward(handle, ids, mask, output_hidden_states=True)
    finally:
        del block.forward
    real = mask.bool()
    moved = hooked.hidden_states[LAYER + 1] - plain.hidden_states[LAYER + 1]
    assert torch.allclose(moved[real], delta.expand(int(real.sum()), -1), atol=1e-5)
    for got, want in zip(hooked.hidden_states, by_hand.hidden_states, strict=True):
        assert torch.allclose(got[real], want[real], atol=1e-5)
    assert torch.allclose(hooked.logits[real], by_hand.logits[real], atol=1e-4)
    assert not torch.allclose(hooked.logits[real], plain.logits[real], atol=1e-3)


def greedy_cached(handle, ids, mask, steps):
    cache = DynamicCache(config=handle.model.config)
    out = handle.model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), cache=cache,
                       use_cache=True)  # fmt: skip
    logits, tokens = [out.logits[:, -1]], []
    for _ in range(steps):
        nxt = logits[-1].argmax(-1, keepdim=True)
        tokens.append(nxt)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        out = handle.model(input_ids=nxt, attention_mask=mask, position_ids=position_ids(mask)[:, -1:],
                           cache=cache, use_cache=True)  # fmt: skip
        logits.append(out.logits[:, -1])
    return torch.cat(tokens, dim=1), torch.stack(logits, 1)


def greedy_uncached(handle, steering, ids, mask, steps):
    """Re-run the whole sequence every step; the steering context is told where each row's reply starts."""
    starts = mask.sum(dim=1)
    logits, tokens = [], []
    for _ in range(steps + 1):
        with steering.reply_starts(starts):
            out = forward(handle, ids, mask)
        logits.append(out.logits[:, -1])
        if len(logits) > steps:
            break
        nxt = logits[-1].argmax(-1, keepdim=True)
        tokens.append(nxt)
        ids, mask = torch.cat([ids, nxt], 1), torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    return torch.cat(tokens, dim=1), torch.stack(logits, 1)


@pytest.mark.parametrize("position", ["all", "prompt", "response"])
def test_cached_and_uncached_generation_agree(handle, tokenizer, position):
    ids, mask = batch(tokenizer)
    terms = steer_terms({LAYER: direction(handle)}, unit="norm", norms={LAYER: 4.0})
    with Steering(handle, terms, 0.8, position) as steering:
        cached_tokens, cached_logits = greedy_cached(handle, ids, mask, 5)
        uncached_tokens, uncached_logits = greedy_uncached(handle, steering, ids, mask, 5)
    assert torch.equal(cached_tokens, uncached_tokens)
    assert torch.allclose(cached_logits, uncached_logits, atol=1e-4)
    _, plain = greedy_cached(handle, ids, mask, 5)
    changed = (cached_logits - plain).abs().amax(dim=-1) > 1e-4  # [rows, steps + 1]
    # Step 0 is chosen by the prompt's last token: steered under all/prompt, untouched under response.
    assert bool(changed[:, 0].all()) == (position != "response")
    assert bool(changed[:, 1:].any())


def test_batched_equals_single_rows(handle, tokenizer):
    texts = ("a calm morning at home", "the train was late again and the rain kept on", "hello")
    ids, mask = batch(tokenizer, texts)
    terms = steer_terms({LAYER: direction(handle)}, unit="norm", norms={LAYER: 4.0})
    for position in ("all", "prompt", "response"):
        with Steering(handle, terms, -0.6, position):
            _, together = greedy_cached(handle, ids, mask, 3)
            for row, text in enumerate(texts):
                one_ids, one_mask = batch(tokenizer, (text,))
                _, alone = greedy_cached(handle, one_ids, one_mask, 3)
                assert torch.allclose(together[row], alone[0], atol=1e-4), (position, row)


def test_leaving_the_context_leaves_nothing_behind(handle, tokenizer):
    ids, mask = batch(tokenizer)
    plain = forward(handle, ids, mask).logits
    before = hooks_left(handle.model)
    terms = steer_terms({0: direction(handle), LAYER: direction(handle, 2)}, unit="raw")
    with pytest.raises(RuntimeError), Steering(handle, terms, 1.0, "prompt"):
        assert hooks_left(handle.model) > before
        raise RuntimeError("interrupted")
    assert hooks_left(handle.model) == before
    assert torch.equal(forward(handle, ids, mask).logits, plain)


def test_contexts_compose_by_adding(handle, tokenizer):
    ids, mask = batch(tokenizer)
    a, b = direction(handle, 1), direction(handle, 2)
    with (
        Steering(handle, steer_terms({LAYER: a}, unit="raw"), 0.5),
        Steering(handle, steer_terms({LAYER: b}, unit="raw"), 0.5),
    ):
        both = forward(handle, ids, mask).logits
    with Steering(handle, steer_terms({LAYER: a + b}, unit="raw"), 0.5):
        summed = forward(handle, ids, mask).logits
    assert torch.allclose(both, summed, atol=1e-5)


def test_mean_norms_leave_out_the_first_tokens(handle, tokenizer):
    texts = ["word " * 70, "a short neutral line about the weather today"]
    got = mean_norms(handle, [0, LAYER], texts, offset=50)
    for layer in (0, LAYER):
        norms = []
        for text in texts:
            ids = torch.tensor([tokenizer(text)["input_ids"]])
            hidden = handle.model(input_ids=ids, output_hidden_states=True).hidden_states[layer + 1][0]
            n = ids.shape[1]
            start = 50 if n > 50 else n // 2
            norms.append(hidden[start:].norm(dim=-1))
        want = torch.cat(norms).mean().item()
        assert got[layer] == pytest.approx(want, rel=1e-5)
        with_sink = mean_norms(handle, [layer], texts, offset=0)[layer]
        assert with_sink != pytest.approx(want, rel=1e-3)


def test_bad_steering_input_names_the_culprit(handle):
    v = direction(handle)
    with pytest.raises(AffectlensError, match="layers \\[7\\] out of range"):
        Steering(handle, steer_terms({7: v}, unit="raw"), 0.1)
    with pytest.raises(AffectlensError, match="position 'middle'"):
        Steering(handle, steer_terms({0: v}, unit="raw"), 0.1, "middle")  # type: ignore[arg-type]
    with pytest.raises(AffectlensError, match="non-zero"):
        steer_terms({0: torch.zeros_like(v)}, unit="norm", norms={0: 1.0})
    with pytest.raises(AffectlensError, match="needs n_L of layer 0"):
        steer_terms({0: v}, unit="norm")
