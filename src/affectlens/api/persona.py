"""Personality fine-tuning and emoji emergence: ``persona_train``, ``persona_measure``, ``persona_compare``.

``persona_train`` writes a LoRA adapter run (a model spec for every stage). ``persona_measure`` writes a
measure run; with ``baseline`` it also measures the baseline into ``OUT/baseline`` and compares the two into
``OUT/comparison``. ``persona_compare`` compares any measure runs of one trait, the first being the base.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from affectlens.analysis.persona import compare_persona
from affectlens.config import PersonaMeasureConfig, PersonaTrainConfig
from affectlens.errors import AffectlensError
from affectlens.reporting.figures.persona import draw
from affectlens.runtime.adapters import is_adapter_run
from affectlens.runtime.loading import ModelHandle, load_model
from affectlens.runtime.lora import qlora_available
from affectlens.stages.persona_measure import PersonaMeasure
from affectlens.stages.persona_train import PersonaTrain
from affectlens.stimuli.traits import load_traits
from affectlens.store.atomic import write_json
from affectlens.store.manifest import RunStore
from affectlens.store.persona import MEASURE, PERSONA_ANALYSIS, TRAIN


def persona_train(model: str | ModelHandle, out: str | Path, config: PersonaTrainConfig, *,
                  corpus: str | Path | None = None, dtype: str | None = None, device: str | None = None,
                  quiet: bool = False) -> dict[str, Any]:  # fmt: skip
    """Train (or resume) a LoRA adapter on ``config.trait``'s ``pole`` (or its neutral answers: ``control``)."""
    traits = load_traits(config.trait, corpus)  # a bad corpus fails before a model loads
    if isinstance(model, str):
        qlora = qlora_available() if config.qlora is None else config.qlora
        if qlora and not qlora_available():
            raise AffectlensError("--qlora needs a CUDA GPU and bitsandbytes; leave it off for plain LoRA")
        model = load_model(model, dtype=dtype, device=device, quantize="4bit" if qlora else None)
    qlora = bool(getattr(model.model, "is_loaded_in_4bit", False))  # what was trained on, not what could be
    return PersonaTrain(model, str(out), traits, config, qlora=qlora, quiet=quiet).run()


def default_label(spec: str) -> str:
    """``extraversion-high`` / ``extraversion-control`` for an adapter run, else the spec's last part."""
    path = Path(spec).expanduser()
    if is_adapter_run(path):
        entry = RunStore(path).stage(TRAIN) or {}
        trait = entry.get("identity", {}).get("stimuli", {}).get("trait", "persona")
        voice = entry.get("identity", {}).get("stimuli", {}).get("voice", "")
        return f"{trait}-{'control' if voice == 'neutral' else voice}"
    return path.name or spec


def _measure_one(model: str | ModelHandle, out: Path, config: PersonaMeasureConfig, corpus, label: str | None,
                 dtype: str | None, device: str | None, quantize: str | None, quiet: bool) -> dict[str, Any]:  # fmt: skip
    spec = model if isinstance(model, str) else model.spec
    if isinstance(model, str):  # a finished run is checked against this model, config and corpus by the stage
        model = load_model(model, dtype=dtype, device=device, quantize=quantize)
    return PersonaMeasure(
        model, str(out), corpus, config, label=label or default_label(spec), quiet=quiet
    ).run()


def persona_measure(model: str | ModelHandle, out: str | Path, config: PersonaMeasureConfig, *,
                    baseline: str | None = None, label: str | None = None, corpus: str | Path | None = None,
                    dtype: str | None = None, device: str | None = None, quantize: str | None = None,
                    quiet: bool = False) -> dict[str, Any]:  # fmt: skip
    """Measure ``model`` on the held-out questions into ``out``; with ``baseline`` (a spec, or a measure run
    folder of the same trait) also the baseline, and their comparison into ``out/comparison``."""
    traits = load_traits(config.trait, corpus)
    out = Path(out)
    summary = _measure_one(model, out, config, traits, label, dtype, device, quantize, quiet)
    if baseline is None:
        return summary
    base_path = Path(baseline).expanduser()
    if base_path.is_dir() and (RunStore(base_path).stage(MEASURE) or {}).get("finished"):
        base_run = base_path
        _same_measurement(base_run, out)
    else:
        base_run = out / "baseline"
        _measure_one(baseline, base_run, config, traits, None, dtype, device, quantize, quiet)
    comparison = persona_compare([base_run, out], out / "comparison")
    return summary | {"comparison": str(out / "comparison" / PERSONA_ANALYSIS), "pairs": comparison["pairs"]}


def _same_measurement(baseline: Path, run: Path) -> None:
    """A baseline measure run must have measured the same questions the same way."""
    a, b = (RunStore(p).require(MEASURE)["identity"] for p in (baseline, run))
    for part in ("stimuli", "config"):
        if a[part] != b[part]:
            raise AffectlensError(
                f"baseline {baseline} was measured with another {part} than {run}; measure the baseline again "
                "with the same settings (pass its model spec as --baseline)"
            )


def persona_compare(runs: list[str | Path], out: str | Path, *, n_boot: int = 1000, n_permutations: int = 2000,
                    top: int = 20, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Compare measure runs (the first is the base) into ``out/persona.json`` and its figures."""
    result = compare_persona(runs, n_boot=n_boot, n_permutations=n_permutations, top=top, seed=seed)
    result["settings"] = {"n_boot": n_boot, "n_permutations": n_permutations, "top": top, "seed": seed}
    out = Path(out)
    result["figures"] = draw(result, out)
    write_json(out / PERSONA_ANALYSIS, result)  # last: a folder with persona.json holds a finished comparison
    return result
