"""Likelihood refuses bad input before any model work: uncovered cells, faces from a run prompted otherwise."""

from __future__ import annotations

import pytest

from affectlens.config import ElicitConfig, LikelihoodConfig
from affectlens.errors import AffectlensError
from affectlens.stages.likelihood import Likelihood, check_same_prompting
from affectlens.stimuli import PromptSet, load_prompts
from affectlens.store.manifest import RunStore


class _NoModel:
    """A handle whose every use is a failure: the checks must run before any model work."""

    spec = fingerprint = "no-model"
    tokenizer = object()

    def __getattr__(self, name):
        raise AssertionError(f"the model was used ({name}) before the input was checked")


def test_prompts_that_miss_a_cell_are_refused_before_scoring(tmp_path):
    # Bug: the refusal came from cell_distributions, after every prompt had been scored.
    two_cells = PromptSet(tuple(p for p in load_prompts() if p.cell in ("LP", "LN")), "h", "two.jsonl")
    stage = Likelihood(_NoModel(), str(tmp_path / "run"), ["(^_^)"], two_cells, LikelihoodConfig())
    with pytest.raises(AffectlensError, match=r"two.jsonl: no prompts for cell\(s\) HP-D"):
        stage.run()
    assert not (tmp_path / "run" / "manifest.json").exists()


def _elicited(folder, config: ElicitConfig) -> str:
    store = RunStore(folder)
    store.begin("elicit", {"config": config.identity()})
    store.finish("elicit", summary={})
    return str(folder)


def test_faces_from_a_run_are_scored_after_the_same_prompting(tmp_path):
    primed = _elicited(tmp_path / "primed", ElicitConfig(primed=True))
    check_same_prompting(primed, LikelihoodConfig(primed=True))
    with pytest.raises(AffectlensError, match="primed = True"):
        check_same_prompting(primed, LikelihoodConfig())
    other = _elicited(tmp_path / "other", ElicitConfig(instruction="Open with an emoji."))
    with pytest.raises(AffectlensError, match="instruction"):
        check_same_prompting(other, LikelihoodConfig())
