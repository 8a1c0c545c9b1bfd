"""Sampling filters (top-k, top-p, min-p) of the one decoding loop: exact, per row, reproducible."""

from __future__ import annotations

import pytest
import torch

from affectlens.config import ElicitConfig, StoryConfig
from affectlens.runtime.generate import Sampling

PROBS = torch.tensor([0.5, 0.3, 0.15, 0.05])


def _logits(rows: int = 1) -> torch.Tensor:
    return PROBS.log().repeat(rows, 1)


def _draws(sampling: Sampling, n: int = 400, seed: int = 0) -> set[int]:
    generators = [torch.Generator().manual_seed(seed + i) for i in range(n)]
    return set(sampling.draw(_logits(n), generators).tolist())


def test_filters_off_reproduce_plain_inverse_cdf_sampling():
    generators = [torch.Generator().manual_seed(i) for i in range(50)]
    expected = []
    for i in range(50):
        u = torch.rand((), generator=torch.Generator().manual_seed(i))
        expected.append(int(torch.searchsorted(PROBS.cumsum(0), u * PROBS.sum())))
    assert Sampling(1.0).draw(_logits(50), generators).tolist() == expected


@pytest.mark.parametrize(
    ("sampling", "allowed"),
    [
        (Sampling(top_k=1), {0}),
        (Sampling(top_k=2), {0, 1}),
        (Sampling(top_p=0.8), {0, 1}),  # 0.5 + 0.3 reaches 0.8: the third token is outside the nucleus
        (Sampling(top_p=0.81), {0, 1, 2}),
        (Sampling(min_p=0.5), {0, 1}),  # 0.15 < 0.5 x 0.5
        (Sampling(top_k=3, min_p=0.35), {0, 1}),
        (Sampling(), {0, 1, 2, 3}),
    ],
)
def test_filters_keep_exactly_the_tokens_they_should(sampling, allowed):
    assert _draws(sampling) == allowed


def test_greedy_at_temperature_zero():
    assert _draws(Sampling(temperature=0.0, top_p=0.5), n=5) == {0}


def test_a_row_draws_the_same_alone_or_in_a_batch():
    torch.manual_seed(0)
    logits = torch.randn(6, 50) * 3
    sampling = Sampling(temperature=0.8, top_k=20, top_p=0.9, min_p=0.05)
    batch = sampling.draw(logits, [torch.Generator().manual_seed(s) for s in range(6)]).tolist()
    alone = [sampling.draw(logits[i : i + 1], [torch.Generator().manual_seed(i)]).item() for i in range(6)]
    assert batch == alone


def test_filters_enter_the_run_identity_only_when_on():
    assert "top_p" not in ElicitConfig().identity()  # runs made before the filters existed still resume
    assert ElicitConfig(top_p=0.9).identity()["top_p"] == 0.9
    assert ElicitConfig(min_p=0.05).identity() != ElicitConfig().identity()
    assert StoryConfig(top_k=40).identity()["top_k"] == 40


def test_a_draw_of_exactly_zero_never_lands_on_a_filtered_token(monkeypatch):
    import affectlens.runtime.generate as generate

    monkeypatch.setattr(generate.torch, "rand", lambda *args, **kwargs: torch.tensor(0.0))
    logits = torch.tensor([[0.0, 5.0, 1.0, 0.5]])  # token 0 is outside the top-1
    assert Sampling(top_k=1).draw(logits, [torch.Generator()]).item() == 1
