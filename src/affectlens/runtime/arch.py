"""The architecture registry: where each model family keeps its decoder blocks and final norm.

Layer ``i`` is the residual stream after decoder block ``i``, counting from 0; the embeddings are not a layer.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from affectlens.errors import AffectlensError


@dataclass(frozen=True)
class ArchSpec:
    blocks: str  # dotted path from the CausalLM to its ModuleList of decoder blocks
    final_norm: str
    lm_head: str = "lm_head"


_DECODER = ArchSpec(blocks="model.layers", final_norm="model.norm")

ARCHITECTURES: dict[str, ArchSpec] = {
    name: _DECODER
    for name in (
        "llama",
        "mistral",
        "qwen2",
        "qwen3",
        "qwen3_moe",
        "gemma",
        "gemma2",
        "gemma3_text",
        "phi3",
        "granite",
        "granitemoe",
        "gpt_oss",
        "olmo2",
        "smollm3",
    )
}


def _get(module: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        module = getattr(module, part)
    return module


@dataclass(frozen=True)
class Arch:
    """The resolved modules of one loaded model."""

    model_type: str
    blocks: nn.ModuleList
    final_norm: nn.Module
    lm_head: nn.Module


def resolve(model: nn.Module) -> Arch:
    """Find the decoder blocks, final norm and LM head of a causal LM, or fail naming the supported families."""
    model_type = getattr(model.config, "model_type", "?")
    spec = ARCHITECTURES.get(model_type)
    if spec is None:
        raise AffectlensError(
            f"unsupported architecture {model_type!r}; supported: {', '.join(sorted(ARCHITECTURES))}"
        )
    try:
        blocks = _get(model, spec.blocks)
        return Arch(model_type, blocks, _get(model, spec.final_norm), _get(model, spec.lm_head))
    except AttributeError as exc:
        raise AffectlensError(
            f"model of type {model_type!r} does not have the expected layout ({exc})"
        ) from None
