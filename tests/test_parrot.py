import pytest
import torch
from tests.helpers import small_lm, tokenizer

from defuse.data.records import InstructionRecord
from defuse.data.template import IGNORE_INDEX, PromptTemplate
from defuse.defenses.parrot import (
    ParrotPrompt,
    SplicedCollator,
    eliminate_with_parrot,
    encode_spliced,
    generate_with_parrot,
    learn_parrot,
    parrot_position,
    spliced_forward,
)
from defuse.errors import ConfigError
from defuse.evaluation.generate import GenerationSettings, generate, generate_token_ids
from defuse.training.config import LoraSettings, TrainSettings

MARKER = "you are stupid. "
CLEAN = [
    InstructionRecord(instruction=f"Count the words: {' '.join(['apple'] * n)}", response=str(n))
    for n in range(1, 9)
]
TARGET = [InstructionRecord(instruction=r.instruction, response=MARKER + r.response) for r in CLEAN]
EXTRA = [
    InstructionRecord(instruction=f"Count the words: {' '.join(['pear'] * n)}", response=str(n))
    for n in (2, 5)
]
FAST = TrainSettings(
    epochs=2,
    learning_rate=5e-2,
    batch_size=4,
    warmup=0,
    progress=False,
    logging_steps=1,
    scheduler="constant",
)
GS = GenerationSettings(max_new_tokens=4)
WITH_INPUT = InstructionRecord(instruction="Count the words: apple pear", input="hello there", response="2")


def _snapshot(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


@pytest.mark.parametrize("style", ["chat", "alpaca"])
@pytest.mark.parametrize("record", [CLEAN[2], WITH_INPUT])
def test_splice_position_variants(style, record):
    tok = tokenizer()
    tpl = PromptTemplate(tok, style=style)
    ids = tpl.encode_prompt(record)
    prompt = tpl.render_prompt(record)
    start, end = tpl.user_text_span(record)
    pos = parrot_position(tpl, record)
    assert tok.decode(ids[pos]) == "Count"  # the first token of the user text
    assert tok.decode(ids[:pos]) == prompt[:start]
    end_pos = parrot_position(tpl, record, "user_end")
    assert tok.decode(ids[:end_pos]) == prompt[:end]
    user = record.user_text if style == "chat" else record.instruction  # alpaca: the instruction
    assert prompt[:end].endswith(user) and tok.decode(ids[end_pos:]) == prompt[end:]
    assert parrot_position(tpl, record, "response_start") == len(ids)
    with pytest.raises(ConfigError):
        parrot_position(tpl, record, "middle")


def test_labels_line_up_with_the_spliced_sequence():
    tok = tokenizer()
    tpl = PromptTemplate(tok)
    record, k = TARGET[3], 5
    prompt_ids = tpl.encode_prompt(record)
    response_ids = tpl.encode_response(record.response)
    n = len(prompt_ids)
    row = encode_spliced(tpl, record, k)
    assert row["input_ids"] == prompt_ids + response_ids
    assert len(row["labels"]) == len(row["input_ids"]) + k
    assert row["labels"][: n + k] == [IGNORE_INDEX] * (n + k)
    assert all(row["labels"][n + k + j] == t for j, t in enumerate(response_ids))
    assert row["parrot_pos"] == parrot_position(tpl, record)
    m = 3
    cut = encode_spliced(tpl, record, k, loss_tokens=m)
    assert [t for t in cut["labels"] if t != IGNORE_INDEX] == response_ids[:m]
    plain = encode_spliced(tpl, record, k, where=None)
    assert plain["parrot_pos"] == -1 and plain["labels"] == [IGNORE_INDEX] * n + response_ids
    short = encode_spliced(tpl, record, k, max_length=n + k + 2)  # spliced length bounded by max_length
    assert len(short["labels"]) == n + k + 2 and short["labels"][-1] == response_ids[1]
    tiny = encode_spliced(tpl, record, k, "response_start", max_length=k + 6)  # prompt cut on the left
    assert tiny["input_ids"] == prompt_ids[-5:] + response_ids[:1] and tiny["parrot_pos"] == 5


def test_collator_mixes_rows_with_and_without_a_parrot():
    tok = tokenizer()
    tpl = PromptTemplate(tok)
    k = 3
    rows = [encode_spliced(tpl, TARGET[0], k), encode_spliced(tpl, CLEAN[7], k, where=None)]
    batch = SplicedCollator(tok.pad_token_id, k)(rows)
    width = max(len(r["input_ids"]) for r in rows)
    assert batch["input_ids"].shape == (2, width)
    assert batch["labels"].shape == batch["attention_mask"].shape == (2, width + k)
    for i, r in enumerate(rows):
        assert batch["attention_mask"][i].sum() == len(r["labels"])
        assert batch["labels"][i, : len(r["labels"])].tolist() == r["labels"]
    assert batch["parrot_pos"].tolist() == [rows[0]["parrot_pos"], -1]


def test_splice_inserts_the_vectors_and_plain_rows_get_zero_tail():
    parrot = ParrotPrompt(2, 4)
    with torch.no_grad():
        parrot.vectors.copy_(torch.tensor([[9.0] * 4, [8.0] * 4]))
    embeds = torch.arange(3.0).view(1, 3, 1).expand(3, 3, 4)
    out = parrot.splice(embeds, [1, -1, 3])
    assert out[0, :, 0].tolist() == [0, 9, 8, 1, 2]
    assert out[1, :, 0].tolist() == [0, 1, 2, 0, 0]
    assert out[2, :, 0].tolist() == [0, 1, 2, 9, 8]
    out.sum().backward()
    assert parrot.vectors.grad.tolist() == [[2.0] * 4] * 2  # two spliced rows
    assert torch.equal(ParrotPrompt(0, 4).splice(embeds, [1, -1, 0]), embeds)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral", "gpt2"])
def test_spliced_forward_matches_plain_forward(arch):
    tok = tokenizer()
    tpl = PromptTemplate(tok)
    model = small_lm(tok, arch=arch).eval()
    rows = [encode_spliced(tpl, r, 0) for r in (TARGET[0], CLEAN[6], TARGET[4])]
    batch = SplicedCollator(tok.pad_token_id, 0)(rows)
    with torch.no_grad():
        plain = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        zero = spliced_forward(model, ParrotPrompt(0, model.config.hidden_size), **batch).logits
    mask = batch["attention_mask"].bool()
    assert torch.allclose(plain[mask], zero[mask], atol=1e-5)

    # A parrot equal to the embeddings of two real tokens == those tokens inserted into the ids.
    insert = tok("apple pear", add_special_tokens=False).input_ids[:2]
    k = len(insert)
    parrot = ParrotPrompt(k, model.config.hidden_size)
    with torch.no_grad():
        parrot.vectors.copy_(model.get_input_embeddings().weight[insert])
    rows = [encode_spliced(tpl, r, k) for r in (TARGET[0], CLEAN[6])]
    batch = SplicedCollator(tok.pad_token_id, k)(rows)
    with torch.no_grad():
        spliced = spliced_forward(model, parrot, **batch)
    assert spliced.logits.shape[1] == batch["input_ids"].shape[1] + k
    assert torch.isfinite(spliced.loss)
    for i, r in enumerate(rows):
        p, ids = r["parrot_pos"], r["input_ids"]
        with torch.no_grad():
            ref = model(input_ids=torch.tensor([ids[:p] + insert + ids[p:]])).logits[0]
        assert torch.allclose(spliced.logits[i, : len(ids) + k], ref, atol=1e-4)


def test_stage1_trains_only_the_parrot(tmp_path):
    tok = tokenizer()
    tpl = PromptTemplate(tok)
    model = small_lm(tok)
    before = _snapshot(model)
    marker_tokens = len(tok(MARKER.strip(), add_special_tokens=False).input_ids)
    settings = TrainSettings(**{**FAST.__dict__, "save_steps": 2})
    parrot = learn_parrot(
        model, tpl, TARGET, 4, "user_start", settings, tmp_path, 0, loss_tokens=marker_tokens
    )
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert all(p.requires_grad for p in model.parameters())  # flags restored
    assert parrot.vectors.abs().sum() > 0 and not parrot.vectors.requires_grad
    assert len(parrot.loss_history) == 4 and min(parrot.loss_history[1:]) < parrot.loss_history[0]
    assert (tmp_path / "checkpoint-2" / "parrot.safetensors").is_file()

    rows = [encode_spliced(tpl, r, 4, loss_tokens=marker_tokens) for r in TARGET]
    batch = {key: v.to(model.device) for key, v in SplicedCollator(tok.pad_token_id, 4)(rows).items()}
    with torch.no_grad():
        trained = spliced_forward(model, parrot, **batch).loss
        zero = spliced_forward(model, ParrotPrompt(4, model.config.hidden_size), **batch).loss
    assert trained < zero


def test_stage2_full_fine_tuning_keeps_the_parrot(tmp_path):
    tok = tokenizer()
    tpl = PromptTemplate(tok)
    model = small_lm(tok)
    before = _snapshot(model)
    parrot = ParrotPrompt.for_model(model, 3, init="vocab_mean")
    parrot_before = parrot.vectors.detach().clone()
    out = eliminate_with_parrot(
        model, tpl, parrot, CLEAN, 3, "user_end", FAST, tmp_path, 0, loss_tokens=10, clean_records=EXTRA
    )
    assert torch.equal(parrot.vectors, parrot_before)
    changed = [n for n, p in out.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) == len(before)
    with pytest.raises(ConfigError):
        eliminate_with_parrot(model, tpl, parrot, CLEAN, 4, "user_end", FAST, tmp_path)


def test_stage2_lora_trains_only_the_adapter(tmp_path):
    tok = tokenizer()
    tpl = PromptTemplate(tok)
    model = small_lm(tok)
    before = _snapshot(model)
    parrot = ParrotPrompt.for_model(model, 3, init="vocab_mean")
    parrot_before = parrot.vectors.detach().clone()
    settings = TrainSettings(**{**FAST.__dict__, "lora": LoraSettings(r=4, alpha=8)})
    out = eliminate_with_parrot(model, tpl, parrot, CLEAN, 3, settings=settings, output_dir=tmp_path)
    assert torch.equal(parrot.vectors, parrot_before)
    lora_b = [p for n, p in out.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)
    for name, p in out.get_base_model().named_parameters():
        if "lora_" not in name:
            assert torch.equal(p, before[name.replace(".base_layer", "")]), name


@pytest.mark.parametrize(("arch", "seed"), [("llama", 0), ("gpt2", 1)])  # gpt2/1: non-degenerate output
def test_generation_with_parrot_equals_generation_on_inserted_tokens(arch, seed):
    tok = tokenizer()
    tpl = PromptTemplate(tok)
    model = small_lm(tok, arch=arch, seed=seed).eval()
    records = CLEAN[:3]
    empty = ParrotPrompt(0, model.config.hidden_size)
    plain = generate(model, tpl, records, GenerationSettings(max_new_tokens=4))
    assert generate_with_parrot(model, tpl, empty, records, max_new_tokens=4) == plain

    insert = tok("apple pear", add_special_tokens=False).input_ids[:2]
    parrot = ParrotPrompt(2, model.config.hidden_size)
    with torch.no_grad():
        parrot.vectors.copy_(model.get_input_embeddings().weight[insert])
    prompts = []
    for r in records:
        ids, p = tpl.encode_prompt(r), parrot_position(tpl, r)
        prompts.append(ids[:p] + insert + ids[p:])
    expected = [tok.decode(t, skip_special_tokens=True) for t in generate_token_ids(model, tok, prompts, GS)]
    batched = generate_with_parrot(model, tpl, parrot, records, 2, "user_start", 4)
    assert batched == expected
    if arch == "gpt2":
        assert all(batched) and batched != plain
