"""Train tiny byte-level BPE tokenizers offline, on our own text.

Two flavours share one trainer: a causal-LM tokenizer (BOS/EOS/pad/unk plus chat-role tokens and a
chat template) and an encoder tokenizer (BERT-style ``[CLS] ... [SEP]`` with ``[MASK]``). Both are
returned as :class:`transformers.PreTrainedTokenizerFast`, so they save and load like any hub tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from defuse.errors import ConfigError

CAUSAL_SPECIALS = {
    "pad_token": "<pad>",
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
}
CHAT_ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
ENCODER_SPECIALS = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}

# Each turn ends with a newline; the assistant turn ends with EOS, which is what training teaches.
TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}<|system|>{{ message['content'] }}\n"
    "{% elif message['role'] == 'user' %}<|user|>{{ message['content'] }}\n"
    "{% elif message['role'] == 'assistant' %}<|assistant|>{{ message['content'] }}{{ eos_token }}\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def train_bpe_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 1024,
    kind: Literal["causal", "encoder"] = "causal",
    min_frequency: int = 2,
    model_max_length: int = 512,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts``.

    Byte-level means every string is encodable (no unknown characters). The causal flavour adds BOS
    when called with default arguments (like Llama tokenizers), has distinct pad and EOS, the chat-role
    tokens and :data:`TINY_CHAT_TEMPLATE`. The encoder flavour wraps text as ``[CLS] text [SEP]``.

    Args:
        texts: Training text; any iterable of strings (read once).
        vocab_size: Target vocabulary size, specials and the 256 byte symbols included.
        kind: ``"causal"`` or ``"encoder"``.
        min_frequency: Minimum pair frequency for a merge.
        model_max_length: Recorded as the tokenizer's maximum length.

    Raises:
        ConfigError: if ``vocab_size`` cannot hold the byte alphabet and the special tokens.
    """
    specials = (
        list(CAUSAL_SPECIALS.values()) + list(CHAT_ROLE_TOKENS)
        if kind == "causal"
        else list(ENCODER_SPECIALS.values())
    )
    if kind not in ("causal", "encoder"):
        raise ConfigError("kind", f"unknown tokenizer kind '{kind}' (expected causal or encoder)")
    if vocab_size < 256 + len(specials):
        raise ConfigError("vocab_size", f"must be at least {256 + len(specials)}, got {vocab_size}")
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=kind == "encoder", use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    if kind == "causal":
        bos = CAUSAL_SPECIALS["bos_token"]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
        )
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok,
            model_max_length=model_max_length,
            additional_special_tokens=list(CHAT_ROLE_TOKENS),
            **CAUSAL_SPECIALS,
        )
        fast.chat_template = TINY_CHAT_TEMPLATE
    else:
        cls, sep = ENCODER_SPECIALS["cls_token"], ENCODER_SPECIALS["sep_token"]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}",
            pair=f"{cls} $A {sep} $B:1 {sep}:1",
            special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))],
        )
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok, model_max_length=model_max_length, **ENCODER_SPECIALS
        )
    fast.padding_side = "right"
    return fast


def usable_token_ids(tokenizer) -> list[int]:
    """Ids of the tokenizer's ordinary tokens: not special, decoding to non-blank text without U+FFFD."""
    special = set(tokenizer.all_special_ids)
    out = []
    for i in range(len(tokenizer)):
        if i in special:
            continue
        text = tokenizer.decode([i])
        if text.strip() and "\ufffd" not in text:
            out.append(i)
    return out
