"""The command line: help, the bundled-model list, and one-line errors with exit code 2."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from affectlens.cli import app
from affectlens.errors import AffectlensError
from affectlens.study import demo_study, load_study, parse_study

runner = CliRunner()


def test_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in (
        "models",
        "elicit",
        "likelihood",
        "compare",
        "analyze",
        "vectors",
        "report",
        "study",
        "demo",
        "steer",
        "monitor",
    ):
        assert command in result.output


def test_steer_options_parse_bands_and_alphas():
    from affectlens.cli.steering import parse_band, parse_floats
    from affectlens.errors import AffectlensError

    assert parse_band("17-19") == (17, 18, 19) and parse_band("5") == (5,) and parse_band(None) is None
    assert parse_floats("-0.5,0,0.25", "--alphas") == (-0.5, 0.0, 0.25)
    with pytest.raises(AffectlensError, match="--alphas must be comma-separated numbers"):
        parse_floats("a,b", "--alphas")
    with pytest.raises(AffectlensError, match="--layers must be"):
        parse_band("x-y")


def test_models_lists_both_bundled_aliases():
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0
    assert "smollm2-135m" in result.output and "gemma3-270m" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["elicit", "--model", "./nope.gguf", "--out", "x"], "does not exist"),
        (["elicit", "--model", "smollm2-135m", "--out", "x", "--prompts", "missing.jsonl"], "no such file"),
        (["elicit", "--model", "smollm2-135m", "--out", "x", "--layers", "1,a"], "--layers"),
        (["study", "missing.yaml"], "no such file"),
        (["report", "no-such-folder", "--out", "r"], "no such folder"),
    ],
)
def test_user_errors_print_one_line_and_exit_2(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_bad_prompt_file_names_the_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.jsonl").write_text(
        '{"id": "a", "cell": "LP", "text": "fine"}\n{"id": "b", "cell": "XX", "text": "t"}\n'
    )
    result = runner.invoke(app, ["elicit", "--model", "smollm2-135m", "--out", "x", "--prompts", "p.jsonl"])
    assert result.exit_code == 2
    assert "p.jsonl:2: unknown cell 'XX'" in result.output


def test_study_files_are_validated_field_by_field(tmp_path):
    good = tmp_path / "study.yaml"
    good.write_text("out: runs/s\nmodels:\n  - spec: smollm2-135m\n    primed: true\nelicit:\n  samples: 2\n")
    study = load_study(good)
    assert study.models[0].name == "smollm2-135m" and study.elicit.samples == 2
    with pytest.raises(AffectlensError, match=r"field 'elicit.samples'"):
        parse_study({"out": "x", "models": [{"spec": "m"}], "elicit": {"samples": 0}})
    with pytest.raises(AffectlensError, match=r"field 'models.0.primd'"):
        parse_study({"out": "x", "models": [{"spec": "m", "primd": True}]})
    with pytest.raises(AffectlensError, match="field 'out'"):
        parse_study({"models": [{"spec": "m"}]})
    with pytest.raises(AffectlensError, match="labels must be unique"):
        parse_study({"out": "x", "models": [{"spec": "m"}, {"spec": "m"}]})
    bad = tmp_path / "bad.yaml"
    bad.write_text("out: [unclosed\n")
    with pytest.raises(AffectlensError, match="not valid YAML"):
        load_study(bad)


def test_demo_study_uses_both_bundled_models():
    study = demo_study("runs/demo")
    assert [m.spec for m in study.models] == ["smollm2-135m", "gemma3-270m"]
    assert {"elicit", "likelihood", "compare", "analyze", "report"} <= set(study.stages)
