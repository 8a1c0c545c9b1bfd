"""The steering sweep: alpha 0 is plain elicitation, controls are what they claim, runs resume, bad input is
one line before the model runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_handle

from affectlens.config import ElicitConfig, SteerConfig
from affectlens.errors import AffectlensError
from affectlens.stages import steer as steer_module
from affectlens.stages.elicit import elicit
from affectlens.stages.steer import SteerSweep, steer_sweep
from affectlens.stages.vectors import vectors
from affectlens.stimuli import load_prompts
from affectlens.stimuli.corpus import load_corpus
from affectlens.store.runs import BASELINE, STEER_COLUMNS, read_elicit, read_steer, read_vectors

SETTINGS = dict(samples=2, max_new_tokens=6, seed=3, temperature=1.0, batch_prompts=4)
STEER = dict(emotions=("elated", "sad"), alphas=(-0.5, 0.0, 0.5), random_controls=2, steer_layers=(1,),
             read_layer=2, **SETTINGS)  # fmt: skip


@pytest.fixture(scope="module")
def handle(tokenizer):
    return tiny_handle(tokenizer, "llama")


@pytest.fixture(scope="module")
def prompts():
    return load_prompts().balanced(1)


@pytest.fixture(scope="module")
def vectors_run(handle, tmp_path_factory):
    out = tmp_path_factory.mktemp("vec") / "vectors"
    vectors(handle, str(out), load_corpus(), quiet=True)
    return str(out)


@pytest.fixture(scope="module")
def sweep(handle, prompts, vectors_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("steer") / "run"
    steer_sweep(handle, str(out), prompts, vectors_run, SteerConfig(**STEER), quiet=True)
    return read_steer(out)


def test_alpha_zero_replies_equal_plain_elicitation(handle, prompts, sweep, tmp_path):
    elicit(handle, str(tmp_path / "plain"), prompts, ElicitConfig(**SETTINGS, layers=(2,)), quiet=True)
    plain = read_elicit(tmp_path / "plain")
    base = sweep.generations[sweep.generations["direction"] == BASELINE]
    assert list(base["reply"]) == list(plain.generations["reply"])
    assert list(base["face"].fillna("-")) == list(plain.generations["face"].fillna("-"))
    # h_first's projection, read at layer 2, is the elicitation's h_first on the emotion's unit vector.
    run = read_vectors(sweep.entry["vectors_run"])
    at = run.layers.index(2)
    neutral = run.activations["neutral"][:, at].mean(axis=0)
    v = run.denoised[list(run.emotions["name"]).index("sad"), at]
    want = (plain.h_first[:, 0].numpy() - neutral) @ (v / np.linalg.norm(v))
    proj = sweep.projections
    got = proj[(proj["direction"] == BASELINE) & (proj["emotion"] == "sad")].set_index("prompt_id")[
        "projection"
    ]
    assert np.allclose(got.loc[plain.prompts["id"]].to_numpy(), want, atol=1e-4)


def test_every_direction_and_alpha_is_there_with_its_units(sweep, prompts):
    g = sweep.generations
    assert list(g.columns) == STEER_COLUMNS
    names = ["elated", "sad", "elated:orthogonal", "sad:orthogonal", "random-0", "random-1"]
    conditions = set(zip(g["direction"], g["alpha"], strict=True))
    assert conditions == {(BASELINE, 0.0)} | {(n, a) for n in names for a in (-0.5, 0.5)}
    assert (g.groupby(["direction", "alpha"]).size() == len(prompts) * 2).all()
    d = sweep.directions.set_index("direction")
    n_l = sweep.entry["steering"]["n_L"]["1"]
    # unit "norm": alpha 1 adds n_L along every direction, emotions and controls alike (norm-matched).
    assert np.allclose(d.loc[names, "scale"], n_l) and np.allclose(d.loc[names, "n_L"], n_l)
    assert list(d.loc[names, "kind"]) == ["emotion"] * 2 + ["orthogonal"] * 2 + ["random"] * 2
    assert d.loc["sad:orthogonal", "emotion"] == "sad" and d.loc["sad", "valence"] < 0
    measures = set(sweep.coherence["measure"])
    assert measures == {"reply_nll", "neutral_nll", "first_token_kl"}


def test_steering_moves_the_model_and_alpha_zero_does_not(sweep):
    c = sweep.coherence
    kl = c[c["measure"] == "first_token_kl"].groupby(["direction", "alpha"])["value"].mean()
    assert kl[(BASELINE, 0.0)] < 1e-5
    assert (kl.drop((BASELINE, 0.0)) > 1e-4).all()
    nll = c[c["measure"] == "neutral_nll"].groupby(["direction", "alpha"])["value"].mean()
    assert nll[("sad", 0.5)] != pytest.approx(nll[(BASELINE, 0.0)], rel=1e-4)


def test_orthogonal_controls_have_no_component_on_the_other_emotions(handle, prompts, vectors_run, tmp_path):
    stage = SteerSweep(handle, str(tmp_path / "x"), prompts, vectors_run, SteerConfig(**STEER))
    stage.validate()
    run = read_vectors(vectors_run)
    names = list(run.emotions["name"])
    elated = torch.from_numpy(run.denoised[names.index("elated"), run.layers.index(1)]).float()
    sad = torch.from_numpy(run.denoised[names.index("sad"), run.layers.index(1)]).float()
    orth = stage.terms["sad:orthogonal"][0].delta
    assert abs(float(orth @ elated)) / (orth.norm() * elated.norm()) < 1e-5
    assert float(orth @ sad) > 0
    r0, r1 = stage.terms["random-0"][0].delta, stage.terms["random-1"][0].delta
    assert abs(float(r0 @ r1) / (r0.norm() * r1.norm())) < 0.9 and not torch.allclose(r0, r1)


def test_an_interrupted_sweep_resumes_to_the_same_tables(handle, prompts, vectors_run, sweep, tmp_path,
                                                         monkeypatch):  # fmt: skip
    out = str(tmp_path / "resumed")
    real, calls = SteerSweep.compute, []

    def dying(self, group):
        calls.append(group)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(self, group)

    monkeypatch.setattr(SteerSweep, "compute", dying)
    with pytest.raises(KeyboardInterrupt):
        steer_sweep(handle, out, prompts, vectors_run, SteerConfig(**STEER), quiet=True)
    monkeypatch.setattr(SteerSweep, "compute", real)
    steer_sweep(handle, out, prompts, vectors_run, SteerConfig(**STEER), quiet=True)
    again = read_steer(out)
    pd.testing.assert_frame_equal(again.generations, sweep.generations)
    coherence = again.coherence.merge(sweep.coherence, on=["direction", "alpha", "measure", "item"])
    bad = coherence[~np.isclose(coherence["value_x"], coherence["value_y"], atol=1e-5)]
    assert bad.empty, bad.to_string()
    with pytest.raises(AffectlensError, match="alphas"):
        steer_sweep(
            handle, out, prompts, vectors_run, SteerConfig(**{**STEER, "alphas": (0.0, 0.25)}), quiet=True
        )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"emotions": ("elated", "joyous")}, "emotion 'joyous' not in vectors run"),
        ({"alphas": (0.0, 3.0)}, "alpha 3.0 is beyond"),
        ({"steer_layers": (9,)}, "layer 9 out of range"),
        ({"read_layer": 7}, "read layer 7 is not in vectors run"),
        ({"read_layer": 1}, "read layer 1 is not in vectors run .* past the steered layers \\[1\\]"),
    ],
)
def test_bad_input_is_one_line_before_the_model_runs(handle, prompts, vectors_run, tmp_path, change, message):
    calls = []
    hook = handle.arch.blocks[0].register_forward_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(AffectlensError, match=message):
            steer_sweep(
                handle, str(tmp_path / "bad"), prompts, vectors_run, SteerConfig(**{**STEER, **change})
            )
    finally:
        hook.remove()
    assert calls == [] and not (tmp_path / "bad").exists()


def test_a_vectors_run_of_another_model_is_refused(tokenizer, prompts, vectors_run, tmp_path):
    other = tiny_handle(tokenizer, "qwen2")
    with pytest.raises(AffectlensError, match="was made with tiny-llama"):
        steer_sweep(other, str(tmp_path / "bad"), prompts, vectors_run, SteerConfig(**STEER))


def test_force_allows_a_strong_alpha(handle, prompts, vectors_run, tmp_path, monkeypatch):
    stage = SteerSweep(handle, str(tmp_path / "x"), prompts, vectors_run,
                       SteerConfig(**{**STEER, "alphas": (0.0, 3.0), "force": True}))  # fmt: skip
    stage.validate()
    keys = stage.keys()
    assert (steer_module.BASELINE + "@0.0") in keys and "sad@3.0" in keys


def test_a_steer_runs_faces_are_scored_under_its_prompting(sweep):
    from affectlens.config import LikelihoodConfig
    from affectlens.stages.likelihood import check_same_prompting
    from affectlens.store.runs import emitted_faces

    assert emitted_faces(sweep.path)  # the faces every condition emitted, read from a steer run
    check_same_prompting(sweep.path, LikelihoodConfig(primed=False))
    with pytest.raises(AffectlensError, match="primed = False"):
        check_same_prompting(sweep.path, LikelihoodConfig(primed=True))
