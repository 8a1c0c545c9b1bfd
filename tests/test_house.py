"""The house: configs as the one source of defaults, the public API, declared dependencies, layering."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from affectlens.config import AnalysisConfig, ElicitConfig, LikelihoodConfig, StoryConfig, VectorsConfig
from affectlens.errors import AffectlensError
from affectlens.store.manifest import RunStore

ROOT = Path(__file__).resolve().parents[1]


def test_likelihood_identity_includes_the_aggregation(tmp_path):
    # Bug: identity() left out aggregation, so a bayes folder silently answered a meanlogp rerun.
    assert LikelihoodConfig(aggregation="meanlogp").identity() != LikelihoodConfig().identity()
    store = RunStore(tmp_path)
    store.begin("likelihood", {"config": LikelihoodConfig().identity()})
    store.finish("likelihood", summary={})
    with pytest.raises(AffectlensError, match="aggregation"):
        store.begin("likelihood", {"config": LikelihoodConfig(aggregation="meanlogp").identity()})


def test_batch_size_and_memory_do_not_enter_identities():
    assert ElicitConfig(batch_prompts=1).identity() == ElicitConfig().identity()
    assert LikelihoodConfig(memory_mb=64).identity() == LikelihoodConfig().identity()
    assert StoryConfig(batch=1).identity() == StoryConfig().identity()


@pytest.mark.parametrize(
    ("config", "field", "value"),
    [
        (ElicitConfig, "samples", 0),
        (ElicitConfig, "max_new_tokens", 0),
        (LikelihoodConfig, "aggregation", "median"),
        (VectorsConfig, "denoise_variance", 1.0),
        (AnalysisConfig, "n_boot", 0),
        (ElicitConfig, "no_such_field", 1),
    ],
)
def test_a_bad_config_value_is_one_line_naming_the_field(config, field, value):
    with pytest.raises(AffectlensError) as caught:
        config(**{field: value})
    message = str(caught.value)
    assert "\n" not in message and field in message and config.__name__ in message


def test_cli_defaults_come_from_the_configs():
    from typer.main import get_command

    from affectlens.cli import app

    command = get_command(app)
    elicit = {p.name: p.default for p in command.commands["elicit"].params}
    assert elicit["samples"] == ElicitConfig().samples
    assert elicit["max_new_tokens"] == ElicitConfig().max_new_tokens
    assert elicit["batch_prompts"] == ElicitConfig().batch_prompts
    analyze = {p.name: p.default for p in command.commands["analyze"].params}
    assert analyze["n_permutations"] == AnalysisConfig().n_permutations
    assert analyze["floor"] == AnalysisConfig().floor


def test_importing_affectlens_loads_neither_torch_nor_transformers():
    code = "import sys, affectlens; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_public_api_is_six_verbs_and_their_configs():
    import affectlens

    verbs = {"load_model", "elicit", "likelihood", "vectors", "analyze", "report"}
    assert verbs <= set(affectlens.__all__)
    for name in verbs:
        assert callable(getattr(affectlens, name)), name
    # Bug: the report subpackage used to shadow the report() verb once anything imported it.
    import affectlens.reporting.format

    assert callable(affectlens.report) and affectlens.report.__module__ == "affectlens.api"


# Distribution name -> the module it provides, where the two differ.
_MODULES = {
    "scikit-learn": "sklearn",
    "pyyaml": "yaml",
    "markdown-it-py": "markdown_it",
    "umap-learn": "umap",
}
# Needed without an import of ours: transformers uses accelerate (device_map="auto") and gguf (GGUF
# files); pandas uses pyarrow for Parquet.
_USED_INDIRECTLY = {"accelerate", "gguf", "pyarrow"}


def test_every_declared_dependency_is_imported_somewhere():
    # Bug: "emoji" was declared and never imported.
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "src").rglob("*.py"))
    for requirement in declared:
        name = re.split(r"[<>=!~ \[]", requirement, maxsplit=1)[0].lower()
        if name in _USED_INDIRECTLY:
            continue
        module = _MODULES.get(name, name.replace("-", "_"))
        assert re.search(rf"^\s*(import|from) {module}\b", source, re.M), (
            f"{name} is declared but never imported"
        )


def test_vectors_prints_headline_numbers_not_a_count_of_json_keys(capsys):
    # Bug: `affectlens vectors` printed len(result) as the number of "sections".
    from affectlens.cli.analyses import print_emotion_headlines

    probe = {"accuracy": 0.871, "accuracy_ci": [0.813, 0.929], "p_value": 0.001, "n": 240}
    implicit = {"top3": {"accuracy": 0.833, "lo": 0.583, "hi": 1.0}}
    print_emotion_headlines(
        {"smollm2-135m": {"layer": 19, "probe": {"headline": probe}, "implicit": implicit}}
    )
    out = capsys.readouterr().out
    assert "0.871 [0.813, 0.929]" in out and "0.833" in out and "sections" not in out


def test_rows_from_parts_written_before_well_formed_existed_are_judged_not_dropped():
    # A resumed run concatenates old parts (no column) with new ones: the old rows come back as NaN.
    import pandas as pd

    from affectlens.store.runs import well_formed_mask

    merged = pd.concat(
        [
            pd.DataFrame({"face": ["(^_^)", "(65)"], "face_kind": ["kaomoji"] * 2}),
            pd.DataFrame(
                {"face": ["(T_T)", None], "face_kind": ["kaomoji", None], "well_formed": [True, None]}
            ),
        ],
        ignore_index=True,
    )
    assert well_formed_mask(merged).tolist() == [True, False, True, False]


def test_an_unfinished_run_resumes_only_in_its_own_dtype(tmp_path):
    from types import SimpleNamespace

    from affectlens.stages.base import Part, Stage

    class Counting(Stage):
        name = "counting"

        def identity(self):
            return {"n": 2}

        def keys(self):
            return ["a", "b"]

        def groups(self, pending):
            return [[key] for key in pending]

        def compute(self, group):
            if group == ["b"] and self.handle.fail:
                raise KeyboardInterrupt  # killed mid-run: part "a" is on disk, "b" is not
            return Part()

        def merge(self, seconds, n_computed):
            return {"computed": n_computed}

    def handle(dtype, fail=False):
        return SimpleNamespace(spec="m", fail=fail, describe=lambda: {"dtype": dtype})

    with pytest.raises(KeyboardInterrupt):
        Counting(handle("float32", fail=True), str(tmp_path), quiet=True).run()
    with pytest.raises(AffectlensError, match="computed in float32; resuming it in bfloat16"):
        Counting(handle("bfloat16"), str(tmp_path), quiet=True).run()
    assert Counting(handle("float32"), str(tmp_path), quiet=True).run() == {"computed": 1}
    assert Counting(handle("bfloat16"), str(tmp_path), quiet=True).run() == {
        "computed": 1
    }  # finished: any dtype reads it
