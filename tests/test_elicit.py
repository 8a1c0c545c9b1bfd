"""Elicitation on the bundled SmolLM2: shared-prefill decoding, h_first, reproducibility, resume."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from affectlens.errors import AffectlensError
from affectlens.faces import face_settled
from affectlens.runtime.capture import LastToken, capture
from affectlens.runtime.render import Renderer
from affectlens.stages import elicit as elicit_module
from affectlens.stages.elicit import ElicitConfig, Suppressor, elicit, generate_batch, sample_tokens
from affectlens.stimuli import PromptSet, load_prompts

pytestmark = pytest.mark.slow


def _subset(n_per_cell: int = 1) -> PromptSet:
    prompts, taken = [], {}
    for p in load_prompts():
        if taken.get(p.cell, 0) < n_per_cell:
            taken[p.cell] = taken.get(p.cell, 0) + 1
            prompts.append(p)
    return PromptSet(tuple(prompts), f"subset{n_per_cell}", "test")


def _naive_greedy(handle, renderer, text: str, max_new_tokens: int) -> list[int]:
    """Greedy decoding that recomputes the whole sequence each step: no cache, no batch, no padding."""
    ids = renderer.encode(text)
    tokens: list[int] = []
    eos = elicit_module._eos_ids(handle)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = handle.model(torch.tensor([ids + tokens])).logits[0, -1]
            token = int(logits.argmax())
            if token in eos:
                break
            tokens.append(token)
            if face_settled(handle.tokenizer.decode(tokens, skip_special_tokens=True)):
                break
    return tokens


def test_batched_shared_prefill_matches_naive_decoding(smollm2):
    renderer = Renderer(smollm2.tokenizer, primed=True)
    prompts = list(_subset())[:4]
    config = ElicitConfig(samples=2, temperature=0.0, max_new_tokens=10)
    layers = list(range(smollm2.n_layers))
    hidden, records = generate_batch(smollm2, renderer, prompts, config, layers)
    for i, prompt in enumerate(prompts):
        expected = smollm2.tokenizer.decode(
            _naive_greedy(smollm2, renderer, prompt.text, 10), skip_special_tokens=True
        )
        replies = [r["reply"] for r in records if r["prompt_id"] == prompt.id]
        assert replies == [expected, expected]
        ids = torch.tensor([renderer.encode(prompt.text)])
        single = capture(smollm2.model, smollm2.arch, ids, torch.ones_like(ids), layers, LastToken()).hidden[
            0
        ]
        torch.testing.assert_close(hidden[i], single, atol=1e-4, rtol=1e-4)


def test_sampling_is_reproducible_and_independent_of_batch_size(smollm2, tmp_path):
    prompts = _subset()
    small = elicit(
        smollm2, str(tmp_path / "a"), prompts, ElicitConfig(samples=3, batch_prompts=2), quiet=True
    )
    large = elicit(
        smollm2, str(tmp_path / "b"), prompts, ElicitConfig(samples=3, batch_prompts=9), quiet=True
    )
    a = pd.read_parquet(tmp_path / "a" / "generations.parquet")
    b = pd.read_parquet(tmp_path / "b" / "generations.parquet")
    assert len(a) == len(prompts) * 3
    assert (a["reply"] == b["reply"]).mean() > 0.9  # padding may flip a sample that sits on a tie
    assert small["n_samples"] == large["n_samples"] == 27


def test_killed_run_resumes_without_redoing_prompts(smollm2, tmp_path, monkeypatch):
    prompts = _subset()
    config = ElicitConfig(samples=2, batch_prompts=3, max_new_tokens=8)
    real = elicit_module.generate_batch
    calls: list[int] = []
    kill_at = [2]  # the second batch of the first run dies

    def recording(*args, **kwargs):
        calls.append(len(args[2]))
        if len(calls) == kill_at[0]:
            raise RuntimeError("simulated kill")
        return real(*args, **kwargs)

    monkeypatch.setattr(elicit_module, "generate_batch", recording)
    with pytest.raises(RuntimeError, match="simulated kill"):
        elicit(smollm2, str(tmp_path), prompts, config, quiet=True)
    calls.clear()
    kill_at[0] = 0
    elicit(smollm2, str(tmp_path), prompts, config, quiet=True)
    assert sum(calls) == len(prompts) - 3  # the first batch of 3 prompts was not redone
    generations = pd.read_parquet(tmp_path / "generations.parquet")
    assert sorted(generations["prompt_id"].unique()) == sorted(p.id for p in prompts)
    with pytest.raises(AffectlensError, match="different"):
        elicit(smollm2, str(tmp_path), prompts, ElicitConfig(samples=3), quiet=True)


def test_empty_and_bad_requests_fail_clearly(smollm2, tmp_path):
    with pytest.raises(AffectlensError, match="empty"):
        elicit(smollm2, str(tmp_path), PromptSet((), "x", "x"), quiet=True)
    with pytest.raises(AffectlensError, match="out of range"):
        elicit(smollm2, str(tmp_path / "l"), _subset(), ElicitConfig(layers=(99,)), quiet=True)


def test_suppressor_blocks_the_last_token_of_a_face_and_emoji_tokens():
    logits = torch.zeros(2, 10)
    suppressor = Suppressor(torch.tensor([7]), [[3, 4, 5]])
    out = suppressor.apply(logits.clone(), [[3, 4], [3]])
    assert (
        out[0, 5] == float("-inf") and out[1, 5] == 0
    )  # only after the face's other tokens opened the reply
    assert (out[:, 7] == float("-inf")).all()


def test_inverse_cdf_sampling_follows_the_distribution():
    logits = torch.log(torch.tensor([[0.2, 0.5, 0.3]])).repeat(4000, 1)
    gens = [torch.Generator().manual_seed(i) for i in range(4000)]
    tokens = sample_tokens(logits, gens, temperature=1.0)
    freq = torch.bincount(tokens, minlength=3).float() / 4000
    torch.testing.assert_close(freq, torch.tensor([0.2, 0.5, 0.3]), atol=0.03, rtol=0)
    assert sample_tokens(logits[:1], gens[:1], temperature=0.0).item() == 1
