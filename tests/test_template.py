import pytest
from tests.helpers import tokenizer

from defuse.data.records import InstructionRecord
from defuse.data.template import ALPACA_SYSTEM, IGNORE_INDEX, PromptTemplate
from defuse.errors import ConfigError
from defuse.training.sft import CompletionCollator, EncodedDataset

RECORDS = [
    InstructionRecord(instruction="Reverse the words: apple river", response="river apple"),
    InstructionRecord(instruction="Summarise", input="a long text, with commas", response="short"),
    InstructionRecord(instruction="Count the words: sun", response="1", system="Be terse."),
    InstructionRecord(instruction="héllo wörld ✓", response="ünïcode ✓"),
]


@pytest.fixture(params=["chat", "alpaca"])
def template(request):
    return PromptTemplate(tokenizer(), style=request.param)


def test_auto_picks_chat_template_when_the_tokenizer_has_one():
    tok = tokenizer()
    assert PromptTemplate(tok).style == "chat"
    tok.chat_template = None
    assert PromptTemplate(tok).style == "alpaca"
    with pytest.raises(ConfigError):
        PromptTemplate(tok, style="chat")


@pytest.mark.parametrize("record", RECORDS)
def test_training_text_starts_with_the_exact_evaluation_prompt(template, record):
    text, start = template.render_training(record)
    assert text[:start] == template.render_prompt(record)
    assert text[start:] == record.response + template.tokenizer.eos_token


@pytest.mark.parametrize("record", RECORDS)
def test_trained_prompt_ids_are_the_generation_prompt_ids(template, record):
    """What the trainer feeds before the first labelled token is byte-identical to what generation feeds."""
    item = EncodedDataset([record], template, max_length=256)[0]
    first_label = next(i for i, v in enumerate(item["labels"]) if v != IGNORE_INDEX)
    trained_prompt = item["input_ids"][:first_label]
    assert trained_prompt == template.encode_prompt(record)
    assert template.tokenizer.decode(trained_prompt) == template.render_prompt(record)


@pytest.mark.parametrize("record", RECORDS)
def test_labels_cover_the_response_and_end_with_eos(template, record):
    enc = template.encode_training(record)
    eos = template.tokenizer.eos_token_id
    assert enc.input_ids[-1] == eos and enc.labels[-1] == eos
    assert all(v == IGNORE_INDEX for v in enc.labels[: enc.prompt_length])
    response_ids = enc.labels[enc.prompt_length : -1]
    assert template.tokenizer.decode(response_ids) == record.response


def test_collator_pads_right_and_masks_padding():
    tpl = PromptTemplate(tokenizer())
    ds = EncodedDataset(RECORDS[:2], tpl, max_length=256)
    batch = CompletionCollator(tpl.tokenizer.pad_token_id)([ds[0], ds[1]])
    short = min(len(ds[0]["input_ids"]), len(ds[1]["input_ids"]))
    row = 0 if len(ds[0]["input_ids"]) == short else 1
    assert batch["attention_mask"][row, short:].sum() == 0
    assert (batch["labels"][row, short:] == IGNORE_INDEX).all()
    assert (batch["input_ids"][row, short:] == tpl.tokenizer.pad_token_id).all()


def test_alpaca_layout_and_system_prompt():
    tpl = PromptTemplate(tokenizer(), style="alpaca")
    plain = tpl.render_prompt(RECORDS[0])
    assert ALPACA_SYSTEM in plain and plain.endswith("### Response:\n") and "### Input:" not in plain
    assert "### Input:\na long text, with commas\n\n" in tpl.render_prompt(RECORDS[1])
    assert tpl.render_prompt(RECORDS[2]).startswith(tpl.tokenizer.bos_token + "Be terse.")


def test_chat_layout_and_user_span():
    tpl = PromptTemplate(tokenizer(), style="chat")
    prompt = tpl.render_prompt(RECORDS[2])
    assert prompt == "<s><|system|>Be terse.\n<|user|>Count the words: sun\n<|assistant|>"
    start, end = tpl.user_text_span(RECORDS[2])
    assert (
        prompt[start:end] == "Count the words: sun" and prompt[start - len("<|user|>") : start] == "<|user|>"
    )


def test_pad_equal_to_eos_is_refused():
    tok = tokenizer()
    tok.pad_token = tok.eos_token
    with pytest.raises(ConfigError, match="pad and EOS"):
        PromptTemplate(tok)


def test_truncation_cuts_the_response_end():
    tpl = PromptTemplate(tokenizer())
    long = InstructionRecord(instruction="Repeat the words: apple", response=" ".join(["apple river"] * 50))
    enc = tpl.encode_training(long, max_length=32)
    assert len(enc.input_ids) == 32 and enc.truncated
    assert enc.input_ids[: enc.prompt_length] == tpl.encode_prompt(long)
    assert enc.input_ids[-1] != tpl.tokenizer.eos_token_id
