"""LoRA fine-tuning with ``peft``: chat examples whose loss falls on the assistant's tokens only, one epoch at
a time, seeded, so that a run resumes from its last finished epoch and reproduces an uninterrupted one.

An example is the rendered prompt (chat template, instruction, question) followed by the answer and the end of
the turn; labels are -100 on the prompt, so the adapter learns how to answer, never the questions. Epoch ``e``
shuffles the examples with a generator seeded from (seed, e), and dropout draws from one seeded from the same,
so resuming at epoch ``e`` replays exactly what an uninterrupted run would have done there.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from affectlens.config import PersonaTrainConfig
from affectlens.errors import AffectlensError
from affectlens.runtime.loading import ModelHandle
from affectlens.runtime.render import Renderer

IGNORE = -100


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]  # IGNORE on the prompt's tokens


def build_example(
    renderer: Renderer, question: str, answer: str, max_length: int, where: str = ""
) -> Example:
    """The prompt's tokens (masked) and the answer's, with the end-of-turn text the template adds."""
    tokenizer = renderer.tokenizer
    prompt_ids = renderer.encode(question)
    if renderer.chat:
        messages = [*renderer.messages(question), {"role": "assistant", "content": answer}]
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    else:
        ids = prompt_ids + tokenizer(renderer.reply_prefix + answer, add_special_tokens=False)["input_ids"]
        ids.append(tokenizer.eos_token_id)
    if ids[: len(prompt_ids)] != prompt_ids:
        raise AffectlensError(
            f"{where}: the chat template renders the prompt differently inside a conversation"
        )
    ids = ids[:max_length]
    labels = [IGNORE] * len(prompt_ids) + ids[len(prompt_ids) :]
    if all(label == IGNORE for label in labels):
        raise AffectlensError(f"{where}: --max-length {max_length} leaves no answer tokens; raise it")
    return Example(ids, labels[: len(ids)])


def qlora_available() -> bool:
    return torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes") is not None


def lora_model(handle: ModelHandle, config: PersonaTrainConfig) -> torch.nn.Module:
    """The handle's model wrapped with fresh LoRA weights (seeded), ready to train."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    torch.manual_seed(config.seed)
    targets = config.target_modules
    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=targets[0] if targets == ("all-linear",) else list(targets),
        task_type="CAUSAL_LM",
    )
    model = handle.model
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        model = prepare_model_for_kbit_training(model)
    try:
        return get_peft_model(model, lora)
    except ValueError as exc:
        raise AffectlensError(f"LoRA target modules {list(targets)}: {str(exc).splitlines()[0]}") from None


def _batch(examples: Sequence[Example], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Right-padded ids, mask and labels; positions come from the mask inside the model."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        mask[row, :n] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) & 0x7FFF_FFFF


def train_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, examples: Sequence[Example],
                *, epoch: int, config: PersonaTrainConfig, pad_id: int) -> list[float]:  # fmt: skip
    """One pass over ``examples`` in the epoch's seeded order; the loss of each step (mean over answer tokens)."""
    order = torch.randperm(
        len(examples), generator=torch.Generator().manual_seed(epoch_seed(config.seed, epoch))
    )
    torch.manual_seed(epoch_seed(config.seed, epoch))  # dropout's draws
    device = next(p for p in model.parameters() if p.requires_grad).device
    model.train()
    losses = []
    for start in range(0, len(order), config.batch_size):
        batch = _batch(
            [examples[i] for i in order[start : start + config.batch_size].tolist()], pad_id, device
        )
        loss = model(**batch).loss
        if not torch.isfinite(loss):
            raise AffectlensError(f"epoch {epoch}: the loss became {loss.item()}; lower --learning-rate")
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    model.eval()
    return losses


@torch.inference_mode()
def mean_loss(
    model: torch.nn.Module, examples: Sequence[Example], *, pad_id: int, batch_size: int = 8
) -> float:
    """Mean answer-token loss over ``examples`` (no dropout): held-out fit before and after training."""
    device = next(model.parameters()).device
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        n = sum(sum(label != IGNORE for label in e.labels[1:]) for e in chunk)
        total += float(model(**_batch(chunk, pad_id, device)).loss) * n
        count += n
    return total / max(count, 1)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA weights (what an epoch's part stores), float32 on the CPU."""
    return {
        name: p.detach().float().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad
    }


def load_trainable_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value.to(params[name].dtype))


def optimizer_state(optimizer: torch.optim.Optimizer, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """AdamW's moments and step count per LoRA weight, as flat tensors (safetensors, not pickle)."""
    out = {}
    for name, param in zip(names, optimizer.param_groups[0]["params"], strict=True):
        for key, value in optimizer.state.get(param, {}).items():
            out[f"adam.{key}.{name}"] = torch.as_tensor(value).detach().float().cpu().contiguous()
    return out


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, names: Sequence[str], state: dict[str, torch.Tensor]
) -> None:
    for name, param in zip(names, optimizer.param_groups[0]["params"], strict=True):
        moments = {key: state[f"adam.{key}.{name}"] for key in ("step", "exp_avg", "exp_avg_sq")}
        optimizer.state[param] = {
            "step": moments["step"].clone(),
            "exp_avg": moments["exp_avg"].to(param.device, param.dtype),
            "exp_avg_sq": moments["exp_avg_sq"].to(param.device, param.dtype),
        }
