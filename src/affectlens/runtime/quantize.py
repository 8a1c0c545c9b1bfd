"""``--quantize 4bit|8bit``: transformers' bitsandbytes config, so that large models fit small GPUs; refused in
one line, before anything loads, where bitsandbytes cannot run (no CUDA, or not installed)."""

from __future__ import annotations

import importlib.util

import torch

from affectlens.errors import AffectlensError

QUANTIZE = ("4bit", "8bit")


def quantization_config(quantize: str | None, device: str, compute_dtype: torch.dtype) -> object | None:
    """transformers' bitsandbytes config for ``--quantize``; refused in one line where it cannot run."""
    if quantize is None:
        return None
    if quantize not in QUANTIZE:
        raise AffectlensError(f"unknown --quantize {quantize!r}; use 4bit or 8bit")
    if not device.startswith("cuda") or not torch.cuda.is_available():
        raise AffectlensError(
            f"--quantize {quantize} needs a CUDA GPU (bitsandbytes); this run is on {device}. "
            "Load in full precision instead, e.g. --dtype bfloat16"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise AffectlensError(f"--quantize {quantize} needs bitsandbytes: pip install bitsandbytes")
    from transformers import BitsAndBytesConfig

    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype
    )
