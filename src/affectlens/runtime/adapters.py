"""LoRA adapters: a finished ``persona train`` run folder is a model spec (its base model, adapter merged in).

The run's manifest names the base model; ``load_adapter_run`` loads it as any spec, applies the adapter with
``peft`` and merges it, so capture, steering and face scoring see an ordinary transformers model. The
fingerprint adds the adapter weights' hash to the base's, so a resumed stage refuses a retrained adapter.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from affectlens.errors import AffectlensError
from affectlens.store.manifest import RunStore
from affectlens.store.persona import TRAIN as TRAIN_STAGE

ADAPTER_DIR = "adapter"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def is_adapter_run(path: Path) -> bool:
    return (path / ADAPTER_DIR / "adapter_config.json").is_file() or (
        path.is_dir() and TRAIN_STAGE in (RunStore(path).manifest().get("stages") or {})
    )


def adapter_hash(run: Path) -> str:
    return hashlib.sha256((run / ADAPTER_DIR / ADAPTER_WEIGHTS).read_bytes()).hexdigest()[:16]


def base_spec(run: Path) -> str:
    entry = RunStore(run).stage(TRAIN_STAGE)
    if entry is None or not entry.get("finished") or not (run / ADAPTER_DIR / ADAPTER_WEIGHTS).is_file():
        raise AffectlensError(
            f"{run} is an unfinished persona train run; finish it with affectlens persona train"
        )
    return entry["identity"]["base"]


def load_adapter_run(run: Path, *, dtype=None, device: str | None = None, quantize: str | None = None):
    """The base model of ``run`` with its LoRA adapter merged in, as a ModelHandle whose spec is the run."""
    from peft import PeftModel

    from affectlens.runtime.arch import resolve
    from affectlens.runtime.loading import load_model

    base = load_model(base_spec(run), dtype=dtype, device=device, quantize=quantize)
    model = PeftModel.from_pretrained(base.model, str(run / ADAPTER_DIR)).merge_and_unload()
    model.eval()
    base.model, base.arch = model, resolve(model)
    base.spec = str(run)
    base.fingerprint = f"{base.fingerprint}+lora:{adapter_hash(run)}"
    base.source = f"{base.source} + LoRA {run / ADAPTER_DIR}"
    return base
