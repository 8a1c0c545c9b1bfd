"""Prompt rendering: the exact text a model sees before its reply, shared by elicitation and likelihood.

Chat models get their chat template. The instruction goes into a system turn when the template has one, and
otherwise at the top of the first user turn, separated by a blank line (a template "has" a system role when
rendering one neither fails nor drops its text). Base models with no template get a plain dialogue:

    {instruction}

    User: {message}
    Assistant:

and their replies begin with a space, so ``reply_prefix`` is " " for them and "" for chat templates.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from affectlens.config import DEFAULT_INSTRUCTION
from affectlens.stimuli import load_primer

_PROBE = "AFFECTLENS-SYSTEM-PROBE-7f3a"


@dataclass(frozen=True)
class Renderer:
    """Renders (instruction, optional primer exchanges, message) into the text before the reply."""

    tokenizer: object
    instruction: str = DEFAULT_INSTRUCTION
    primed: bool = False

    @cached_property
    def chat(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    @cached_property
    def system_role(self) -> bool:
        if not self.chat:
            return False
        try:
            text = self.tokenizer.apply_chat_template(
                [{"role": "system", "content": _PROBE}, {"role": "user", "content": "x"}],
                tokenize=False,
                add_generation_prompt=True,
            )
        except Exception:  # templates signal "no system role" by raising their own error types
            return False
        return _PROBE in text

    @cached_property
    def exchanges(self) -> list[dict[str, str]]:
        return load_primer() if self.primed else []

    @property
    def reply_prefix(self) -> str:
        """What separates the rendered prefix from the reply text."""
        return "" if self.chat else " "

    @property
    def variant(self) -> str:
        return "primed" if self.primed else "free"

    def messages(self, message: str) -> list[dict[str, str]]:
        turns: list[dict[str, str]] = []
        for exchange in self.exchanges:
            turns += [
                {"role": "user", "content": exchange["user"]},
                {"role": "assistant", "content": exchange["reply"]},
            ]
        turns.append({"role": "user", "content": message})
        if self.system_role:
            return [{"role": "system", "content": self.instruction}, *turns]
        turns[0] = {"role": "user", "content": f"{self.instruction}\n\n{turns[0]['content']}"}
        return turns

    def render(self, message: str) -> str:
        """The full text up to the start of the assistant's reply."""
        if self.chat:
            return self.tokenizer.apply_chat_template(
                self.messages(message), tokenize=False, add_generation_prompt=True
            )
        lines = [self.instruction, ""]
        for exchange in self.exchanges:
            lines += [f"User: {exchange['user']}", f"Assistant: {exchange['reply']}", ""]
        lines += [f"User: {message}", "Assistant:"]
        return "\n".join(lines)

    def encode(self, message: str) -> list[int]:
        """Token ids of the rendered prefix. Chat templates carry their own special tokens; plain text gets BOS."""
        return self.tokenizer(self.render(message), add_special_tokens=not self.chat)["input_ids"]

    def describe(self) -> dict[str, object]:
        return {
            "instruction": self.instruction,
            "variant": self.variant,
            "format": ("chat template, system turn" if self.system_role else "chat template, user turn")
            if self.chat
            else "plain dialogue",
        }
