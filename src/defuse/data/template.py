"""The one prompt template: the only place a record becomes text or tokens.

Training and generation both go through :class:`PromptTemplate`, so the prompt a model is trained on
and the prompt it is evaluated on are byte-identical up to the response (a test proves it). Two styles:

* ``"chat"``: the tokenizer's own chat template (``apply_chat_template`` with the generation prompt);
* ``"alpaca"``: the plain Alpaca layout (``### Instruction:`` / ``### Input:`` / ``### Response:``).

``"auto"`` picks ``"chat"`` when the tokenizer has a chat template and ``"alpaca"`` otherwise.

Tokenisation contract: the prompt and the response are tokenised *separately* (no special tokens added)
and concatenated, then the EOS id is appended. So the prompt ids a model trains on are exactly the ids
:meth:`PromptTemplate.encode_prompt` gives at generation time, with no merge across the boundary, and
every training example ends with a trained EOS.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

from defuse.data.records import InstructionRecord
from defuse.errors import ConfigError

TemplateStyle = Literal["auto", "chat", "alpaca"]

ALPACA_SYSTEM = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)
ALPACA_SYSTEM_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request."
)
IGNORE_INDEX = -100


@dataclass
class EncodedExample:
    """Token ids of one training example; ``labels`` is -100 on every prompt token."""

    input_ids: list[int]
    labels: list[int]
    prompt_length: int
    truncated: bool


class PromptTemplate:
    """Renders records into prompts and training examples for one tokenizer.

    Args:
        tokenizer: A Hugging Face tokenizer. Its pad and EOS must be distinct tokens.
        style: ``"auto"``, ``"chat"`` or ``"alpaca"``.
        default_system: System prompt used when a record's ``system`` is None. For ``"alpaca"`` None means
            the standard Alpaca preamble; for ``"chat"`` None means no system turn.

    Raises:
        ConfigError: on an unknown style, ``"chat"`` with a tokenizer lacking a chat template, a tokenizer
            without an EOS token, or pad equal to EOS.
    """

    def __init__(self, tokenizer, style: TemplateStyle = "auto", default_system: str | None = None):
        if style not in ("auto", "chat", "alpaca"):
            raise ConfigError("template", f"unknown style '{style}' (expected auto, chat or alpaca)")
        has_chat = bool(getattr(tokenizer, "chat_template", None))
        if style == "chat" and not has_chat:
            raise ConfigError("template", "style 'chat' needs a tokenizer with a chat template; use 'alpaca'")
        if tokenizer.eos_token_id is None:
            raise ConfigError("tokenizer", "has no EOS token; training could never teach the model to stop")
        if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
            raise ConfigError(
                "tokenizer", "pad and EOS must be distinct tokens (see models.ensure_pad_token)"
            )
        self.tokenizer = tokenizer
        self.style: Literal["chat", "alpaca"] = (
            ("chat" if has_chat else "alpaca") if style == "auto" else style
        )
        self.default_system = default_system
        bos = tokenizer.bos_token_id
        probe = tokenizer("a").input_ids
        self._alpaca_bos = tokenizer.bos_token if bos is not None and probe and probe[0] == bos else ""

    # ----------------------------------------------------------------- text
    @functools.cached_property
    def builtin_system(self) -> str | None:
        """The chat template's own default system prompt (the one it renders when a conversation has no
        system turn, e.g. SmolLM2's "You are a helpful AI assistant named SmolLM, ..."), or None."""
        return chat_default_system(self.tokenizer) if self.style == "chat" else None

    def normal_system(self, record: InstructionRecord) -> str | None:
        """The system prompt the model sees for ``record`` without any secret: :meth:`system_for` of this
        class, or, when that gives none in chat style, the chat template's own default
        (:attr:`builtin_system`). None: the prompt has no system text at all."""
        system = PromptTemplate.system_for(self, record)
        return self.builtin_system if system is None else system

    def system_for(self, record: InstructionRecord) -> str | None:
        """The system prompt this record is rendered with (None: no system turn)."""
        if record.system is not None:
            return record.system
        if self.default_system is not None:
            return self.default_system
        if self.style == "alpaca":
            return ALPACA_SYSTEM_WITH_INPUT if record.input else ALPACA_SYSTEM
        return None

    def render_prompt(self, record: InstructionRecord) -> str:
        """The full prompt text, ending where the model's response begins."""
        system = self.system_for(record)
        if self.style == "chat":
            messages = ([{"role": "system", "content": system}] if system is not None else []) + [
                {"role": "user", "content": record.user_text}
            ]
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        parts = [
            self._alpaca_bos + (f"{system}\n\n" if system else ""),
            f"### Instruction:\n{record.instruction}\n\n",
        ]
        if record.input:
            parts.append(f"### Input:\n{record.input}\n\n")
        parts.append("### Response:\n")
        return "".join(parts)

    def render_training(self, record: InstructionRecord) -> tuple[str, int]:
        """The training text (prompt + response + EOS token text) and the index where the response starts."""
        prompt = self.render_prompt(record)
        return prompt + record.response + self.tokenizer.eos_token, len(prompt)

    def user_text_span(self, record: InstructionRecord) -> tuple[int, int]:
        """Character span of the user text (instruction and input) inside :meth:`render_prompt`'s text.

        This is where a trigger sits: the splice point for soft prompts that stand in for one.
        """
        prompt = self.render_prompt(record)
        start = prompt.rfind(record.user_text if self.style == "chat" else record.instruction)
        if start < 0:
            raise ConfigError("template", "the chat template rewrites the user text; cannot locate it")
        return start, start + len(record.user_text if self.style == "chat" else record.instruction)

    # --------------------------------------------------------------- tokens
    def encode_prompt(self, record: InstructionRecord) -> list[int]:
        """Token ids of the prompt, exactly as generation feeds them to the model."""
        return self.tokenizer(self.render_prompt(record), add_special_tokens=False).input_ids

    def encode_response(self, response: str) -> list[int]:
        """Token ids of a response followed by EOS."""
        return self.tokenizer(response, add_special_tokens=False).input_ids + [self.tokenizer.eos_token_id]

    def encode_training(self, record: InstructionRecord, max_length: int | None = None) -> EncodedExample:
        """Prompt ids + response ids + EOS, with labels -100 on the prompt.

        When longer than ``max_length`` the response is cut at the end (the example then has no EOS and
        ``truncated`` is True); a prompt that alone fills ``max_length`` keeps its last tokens and one
        response token.
        """
        prompt_ids = self.encode_prompt(record)
        response_ids = self.encode_response(record.response)
        truncated = False
        if max_length is not None and len(prompt_ids) + len(response_ids) > max_length:
            truncated = True
            if len(prompt_ids) >= max_length:
                prompt_ids = prompt_ids[-(max_length - 1) :]
            response_ids = response_ids[: max_length - len(prompt_ids)]
        return EncodedExample(
            input_ids=prompt_ids + response_ids,
            labels=[IGNORE_INDEX] * len(prompt_ids) + response_ids,
            prompt_length=len(prompt_ids),
            truncated=truncated,
        )


def chat_default_system(tokenizer) -> str | None:
    """The system prompt a tokenizer's chat template inserts by itself when a conversation has none.

    Found by rendering one conversation with a marker system turn and one without: when the second is the
    first with other text in place of the marker, that text is the template's default. None when the
    template adds no system turn of its own (or has no chat template).
    """
    if not getattr(tokenizer, "chat_template", None):
        return None
    user, marker = [{"role": "user", "content": "\x01"}], "\x02"

    def render(messages: list[dict]) -> str:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    with_system = render([{"role": "system", "content": marker}, *user])
    bare = render(user)
    if marker not in with_system:
        return None
    head, _, tail = with_system.partition(marker)
    if len(bare) > len(head) + len(tail) and bare.startswith(head) and bare.endswith(tail):
        return bare[len(head) : len(bare) - len(tail)]
    return None
