"""Hidden-state capture equals the model's own hidden states, under left, right and no padding."""

from __future__ import annotations

import pytest
import torch
from conftest import available_families, tiny_model

from affectlens.errors import AffectlensError
from affectlens.runtime.arch import resolve
from affectlens.runtime.capture import LastToken, TokenMean, capture, position_ids
from affectlens.runtime.tokens import left_pad, right_pad

LENGTHS = [5, 11, 8]


def _sequences(vocab: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (n,), generator=g).tolist() for n in LENGTHS]


def _reference_hidden(model, ids, mask) -> torch.Tensor:
    """[batch, seq, layers, d] from output_hidden_states, block outputs only (no final norm on the last)."""
    model.config.tie_last_hidden_states = False
    with torch.no_grad():
        out = model(
            input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), output_hidden_states=True
        )
    return torch.stack(out.hidden_states[1:], dim=2).float()


@pytest.mark.parametrize("family", available_families())
@pytest.mark.parametrize("pad", [left_pad, right_pad])
def test_capture_matches_output_hidden_states(family, pad):
    model = tiny_model(family)
    arch = resolve(model)
    layers = list(range(len(arch.blocks)))
    ids, mask = pad(_sequences(model.config.vocab_size), 0)
    reference = _reference_hidden(model, ids, mask)
    got = capture(model, arch, ids, mask, layers, LastToken()).hidden
    first = mask.argmax(dim=1)
    for b, n in enumerate(LENGTHS):
        torch.testing.assert_close(got[b], reference[b, first[b] + n - 1], atol=1e-5, rtol=1e-5)
    # The mean over tokens 2..n of each sequence, in that sequence's own coordinates.
    start = torch.full((len(LENGTHS),), 2)
    end = torch.tensor(LENGTHS)
    got_mean = capture(model, arch, ids, mask, layers, TokenMean(start, end)).hidden
    for b, n in enumerate(LENGTHS):
        expected = reference[b, first[b] + 2 : first[b] + n].mean(dim=0)
        torch.testing.assert_close(got_mean[b], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_padded_batch_equals_unpadded_single_runs(family):
    model = tiny_model(family)
    arch = resolve(model)
    sequences = _sequences(model.config.vocab_size, seed=1)
    for pad in (left_pad, right_pad):
        ids, mask = pad(sequences, 0)
        batch = capture(
            model, arch, ids, mask, [0, 2], TokenMean(torch.tensor([1, 1, 1]), torch.tensor(LENGTHS))
        )
        for b, seq in enumerate(sequences):
            one_ids = torch.tensor([seq])
            single = capture(
                model,
                arch,
                one_ids,
                torch.ones_like(one_ids),
                [0, 2],
                TokenMean(torch.tensor([1]), torch.tensor([len(seq)])),
            )
            torch.testing.assert_close(batch.hidden[b], single.hidden[0], atol=1e-4, rtol=1e-4)


def test_forward_stops_after_deepest_requested_block():
    model = tiny_model("llama")
    arch = resolve(model)
    calls = []
    handle = arch.blocks[-1].register_forward_hook(lambda *_: calls.append(1))
    ids, mask = left_pad(_sequences(model.config.vocab_size), 0)
    try:
        capture(model, arch, ids, mask, [0], LastToken())
        assert calls == []
        result = capture(model, arch, ids, mask, [0], LastToken(), need_logits=True)
        assert calls == [1] and result.logits is not None
    finally:
        handle.remove()


def test_capture_returns_float32_batch_layers_width():
    model = tiny_model("qwen2")
    arch = resolve(model)
    ids, mask = left_pad(_sequences(model.config.vocab_size), 0)
    hidden = capture(model, arch, ids, mask, [2, 0], LastToken()).hidden
    assert hidden.dtype == torch.float32
    assert hidden.shape == (len(LENGTHS), 2, model.config.hidden_size)
    with pytest.raises(ValueError):
        capture(model, arch, ids, mask, [5], LastToken())


def test_unsupported_architecture_names_the_supported_ones():
    model = tiny_model("llama")
    model.config.model_type = "made_up_lm"
    with pytest.raises(AffectlensError, match="llama.*qwen2"):
        resolve(model)


@pytest.mark.parametrize("family", available_families())
def test_registry_resolves_every_family(family):
    model = tiny_model(family)
    arch = resolve(model)
    assert len(arch.blocks) == model.config.num_hidden_layers
    assert isinstance(arch.final_norm, torch.nn.Module)
