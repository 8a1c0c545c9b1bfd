"""Face likelihood: the packed-trie scorer against a direct computation, boundary merges, cell distributions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import FAMILY_EXTRA, available_families, tiny_handle

from affectlens.errors import AffectlensError
from affectlens.runtime.face_scoring import HEAD_BLOCK, _Trie, score_prompt, shared_head
from affectlens.runtime.render import Renderer
from affectlens.stages.likelihood import cell_distributions, emission_over_vocabulary
from affectlens.stimuli import load_catalogue


@pytest.fixture(scope="module")
def tiny(tokenizer):
    """A random 3-block llama with the tiny byte-level BPE (conftest): real tokenization, fast forwards."""
    return tiny_handle(tokenizer, "llama")


@dataclass(frozen=True)
class FixedText(Renderer):
    """A renderer whose prefix is a fixed text, to force a tokenizer merge at the boundary."""

    text: str = ""

    def render(self, message: str) -> str:
        return self.text

    @property
    def chat(self) -> bool:
        return False

    @property
    def reply_prefix(self) -> str:
        return ""


def direct_logp(handle, prefix_text: str, face: str, add_special: bool) -> float:
    """log P(face | prefix) from full forward passes of the joined text (and of the prefix, for merges)."""
    tok = handle.tokenizer
    prefix = tok(prefix_text, add_special_tokens=add_special)["input_ids"]
    joined = tok(prefix_text + face, add_special_tokens=add_special)["input_ids"]
    n = 0
    while n < min(len(prefix), len(joined)) and prefix[n] == joined[n]:
        n += 1

    def logp_of(ids: list[int], start: int) -> float:
        with torch.no_grad():
            logp = torch.log_softmax(handle.model(torch.tensor([ids])).logits[0].double(), dim=-1)
        return sum(logp[j - 1, ids[j]].item() for j in range(start, len(ids)))

    return logp_of(joined, n) - (logp_of(prefix, n) if n < len(prefix) else 0.0)


def test_trie_scoring_equals_a_full_forward_per_face(tiny):
    assert len(tiny.tokenizer) > HEAD_BLOCK  # the LM head is read in more than one block
    renderer = Renderer(tiny.tokenizer)
    faces = [*load_catalogue()[:40], "😀", "ok"]
    message = "my cat knocked the plant off the shelf again"
    scores = score_prompt(tiny, renderer, message, faces, max_nodes=64)  # small chunks: several passes
    expected = [direct_logp(tiny, renderer.render(message), face, add_special=False) for face in faces]
    np.testing.assert_allclose(scores, expected, atol=1e-4)


def test_a_face_that_merges_with_the_prompt_uses_the_joint_tokenization(tiny):
    renderer = FixedText(tiny.tokenizer, text="the weather today is wor")
    prefix = tiny.tokenizer(renderer.text)["input_ids"]
    joined = tiny.tokenizer(renderer.text + "ld")["input_ids"]
    assert joined[: len(prefix)] != prefix  # "wor" + "ld" really merge into one token
    faces = ["ld", "(^_^)", "k"]
    scores = score_prompt(tiny, renderer, "ignored", faces)
    expected = [direct_logp(tiny, renderer.text, face, add_special=False) for face in faces]
    np.testing.assert_allclose(scores, expected, atol=1e-4)


def test_trie_shares_prefixes_and_masks_only_ancestors():
    trie = _Trie.build([[1, 2, 3], [1, 2, 4], [1, 5, 6, 7], [8]])
    assert trie.tokens == [1, 2, 5, 6]  # last tokens are scored, never fed; [1] and [1, 2] are shared
    assert trie.paths == [[0, 1], [0, 1], [0, 2, 3], []]
    seen = trie.ancestry()
    assert seen[3].tolist() == [True, False, True, True]  # node 6 sees 1 and 5, not the sibling 2


def test_cell_distributions_bayes_and_mean_logp():
    prompts = pd.DataFrame({"id": ["a", "b", "c", "d"], "cell": ["LP", "LP", "LN", "LN"]})
    from affectlens.cells import CellSet, default_cells

    two = CellSet("two", tuple(c for c in default_cells().cells if c.code in ("LP", "LN")))
    logp = pd.DataFrame(
        {"face": ["x"] * 4, "prompt_id": ["a", "b", "c", "d"], "logp": np.log([0.4, 0.0001, 0.1, 0.1])}
    )
    bayes = cell_distributions(logp, prompts, two, "bayes")
    # P(c | f) ~ mean_p P(f | p): LP (0.4 + 0.0001) / 2, LN 0.1
    expected_lp = 0.20005 / (0.20005 + 0.1)
    assert bayes.loc["x", "LP"] == pytest.approx(expected_lp)
    geometric = cell_distributions(logp, prompts, two, "meanlogp")
    assert (
        geometric.loc["x", "LP"] < 0.5 < bayes.loc["x", "LP"]
    )  # one unlikely prompt drags the mean log down
    assert bayes.loc["x", "top_cell"] == "LP"
    # No underflow: log-probabilities far below float range still give a proper distribution.
    tiny_logp = logp.assign(logp=logp["logp"] - 2000)
    np.testing.assert_allclose(
        cell_distributions(tiny_logp, prompts, two)[["LP", "LN"]].to_numpy(), bayes[["LP", "LN"]].to_numpy()
    )
    with pytest.raises(AffectlensError, match="unknown aggregation"):
        cell_distributions(logp, prompts, two, "median")


def test_emission_over_vocabulary_agreement():
    prompts = pd.DataFrame({"id": ["a", "b"], "cell": ["LP", "LN"]})
    logp = pd.DataFrame(
        {
            "face": ["x", "y", "x", "y"],
            "prompt_id": ["a", "a", "b", "b"],
            "logp": np.log([0.9, 0.1, 0.2, 0.8]),
        }
    )
    face_cells = pd.DataFrame({"top_cell": ["LP", "LN"]}, index=["x", "y"])
    result = emission_over_vocabulary(logp, prompts, face_cells)
    assert result["expected_agreement"] == pytest.approx((0.9 + 0.8) / 2)


@pytest.mark.parametrize("family", available_families())
def test_tree_rows_match_a_full_forward_in_every_family(family, tokenizer):
    """Rows, padding, sliding windows (16 tokens here, shorter than the prompt), softcapping and sinks."""
    handle = tiny_handle(tokenizer, family)
    renderer = Renderer(tokenizer)
    message = "the train was cancelled and I missed the interview"
    assert len(renderer.encode(message)) > 2 * FAMILY_EXTRA["gemma2"]["sliding_window"]
    faces = load_catalogue()[:30]
    scores = score_prompt(handle, renderer, message, faces, max_nodes=48, row_nodes=8)
    expected = [direct_logp(handle, renderer.render(message), face, add_special=False) for face in faces]
    np.testing.assert_allclose(scores, expected, atol=1e-4)
    # The template and instruction that every prompt starts with, cached once, change nothing.
    shared = shared_head(handle, renderer, [message, "my sister got the job she wanted"])
    assert shared is not None and 10 < len(shared.ids) < len(renderer.encode(message))
    np.testing.assert_allclose(
        score_prompt(handle, renderer, message, faces, 48, 8, shared=shared), expected, atol=1e-4
    )


@pytest.mark.slow
def test_trie_scoring_on_the_bundled_model(smollm2):
    """The real vocabulary (49k tokens, many LM-head blocks) and chat template, shared head included."""
    renderer = Renderer(smollm2.tokenizer)
    faces = [*load_catalogue()[::20], "😀"]
    message = "my cat knocked the plant off the shelf again"
    shared = shared_head(smollm2, renderer, [message, "my sister got the job she wanted"])
    scores = score_prompt(smollm2, renderer, message, faces, max_nodes=64, shared=shared)
    expected = [direct_logp(smollm2, renderer.render(message), face, add_special=False) for face in faces]
    np.testing.assert_allclose(scores, expected, atol=1e-4)
