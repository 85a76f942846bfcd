import ctypes
import os
import platform
import subprocess
import sys

import pytest
import torch
from tests.helpers import small_lm, tokenizer

from defuse.data.records import InstructionRecord
from defuse.data.template import PromptTemplate
from defuse.errors import ConfigError
from defuse.evaluation.generate import GenerationSettings, generate, generate_token_ids
from defuse.training.config import LoraSettings, TrainSettings
from defuse.training.memory import USER_SETTINGS
from defuse.training.sft import SFTTrainer, length_chunks, train_sft

RECORDS = [
    InstructionRecord(instruction=f"Count the words: {' '.join(['apple'] * n)}", response=str(n))
    for n in range(1, 9)
] * 4
FAST = TrainSettings(epochs=3, learning_rate=1e-2, batch_size=8, progress=False, logging_steps=1)


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_full_fine_tuning_changes_every_trained_weight_and_lowers_loss(tmp_path):
    tok = tokenizer()
    model = small_lm(tok)
    before = _snapshot(model)
    result = train_sft(model, PromptTemplate(tok), RECORDS, FAST, tmp_path, seed=0)
    assert result.steps == 12 and len(result.loss_history) == 12
    assert result.loss_history[-1] < 0.6 * result.loss_history[0]
    after = dict(result.model.named_parameters())
    changed = [n for n, p in after.items() if not torch.equal(p, before[n])]
    assert len(changed) == len(before)


def test_freeze_embeddings_keeps_them_and_trains_the_rest(tmp_path):
    tok = tokenizer()
    model = small_lm(tok)
    before = _snapshot(model)
    settings = TrainSettings(**{**FAST.__dict__, "freeze_embeddings": True})
    result = train_sft(model, PromptTemplate(tok), RECORDS, settings, tmp_path, seed=0)
    frozen = {
        id(p) for m in (model.get_input_embeddings(), model.get_output_embeddings()) for p in m.parameters()
    }
    for name, p in result.model.named_parameters():
        if id(p) in frozen:
            assert torch.equal(p, before[name]), name
        else:
            assert not torch.equal(p, before[name]), name
    assert frozen and len(frozen) < len(before)


# peft's default LoRA targets per architecture: the attention projections (GPT-2 fuses q, k, v in c_attn).
LORA_TARGETS = {"llama": {"q_proj", "v_proj"}, "qwen2": {"q_proj", "v_proj"}, "mistral": {"q_proj", "v_proj"},
                "gpt2": {"c_attn"}}  # fmt: skip


@pytest.mark.parametrize("arch", sorted(LORA_TARGETS))
def test_lora_trains_only_the_adapter(tmp_path, arch):
    tok = tokenizer()
    model = small_lm(tok, arch=arch)
    before = _snapshot(model)
    settings = TrainSettings(**{**FAST.__dict__, "lora": LoraSettings(r=4, alpha=8)})
    result = train_sft(model, PromptTemplate(tok), RECORDS, settings, tmp_path, seed=0)
    lora = {n: p for n, p in result.model.named_parameters() if "lora_" in n}
    assert lora and all(p.requires_grad for p in lora.values())
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in lora}
    assert adapted == LORA_TARGETS[arch]
    assert len(lora) == 2 * len(LORA_TARGETS[arch]) * 2  # A and B, per target, per layer (2 layers)
    lora_b = [p for n, p in lora.items() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora_b)  # B starts at zero: non-zero means it trained
    base = result.model.get_base_model()
    for name, p in base.named_parameters():
        if "lora_" not in name:
            key = name.replace(".base_layer", "")
            assert torch.equal(p, before[key]), name


@pytest.mark.parametrize("arch", sorted(LORA_TARGETS))
def test_lora_on_the_tiny_model_is_merged_when_saved(tmp_path, arch):
    from defuse.models.factory import load_trained, save_trained

    tok = tokenizer()
    settings = TrainSettings(**{**FAST.__dict__, "lora": LoraSettings(r=4, alpha=8)})
    trained = train_sft(
        small_lm(tok, arch=arch), PromptTemplate(tok), RECORDS, settings, tmp_path, seed=0
    ).model
    x = torch.tensor([tok("Count the words: apple apple").input_ids])
    with torch.no_grad():
        expected = trained(x).logits
    assert save_trained(trained, tok, tmp_path / "m", base_path=None) == "full"
    loaded, _ = load_trained(tmp_path / "m")
    with torch.no_grad():
        assert torch.allclose(loaded(x).logits, expected, atol=1e-5)


def test_same_seed_same_weights(tmp_path):
    tok = tokenizer()
    runs = [
        train_sft(small_lm(tok), PromptTemplate(tok), RECORDS, FAST, tmp_path / str(i), seed=7).model
        for i in range(2)
    ]
    for (n, a), (_, b) in zip(runs[0].named_parameters(), runs[1].named_parameters(), strict=True):
        assert torch.equal(a, b), n


def test_resume_from_checkpoint_continues_to_the_same_step(tmp_path):
    tok = tokenizer()
    settings = TrainSettings(**{**FAST.__dict__, "save_steps": 4})
    first = train_sft(small_lm(tok), PromptTemplate(tok), RECORDS, settings, tmp_path, seed=0)
    assert first.resumed_from is None and (tmp_path / "checkpoint-12").is_dir()
    import shutil

    shutil.rmtree(tmp_path / "checkpoint-12")  # as if killed after step 8
    second = train_sft(small_lm(tok), PromptTemplate(tok), RECORDS, settings, tmp_path, seed=0)
    assert second.resumed_from.endswith("checkpoint-8") and second.steps == 12
    for (n, a), (_, b) in zip(first.model.named_parameters(), second.model.named_parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), n


def test_batched_generation_equals_one_prompt_at_a_time():
    tok = tokenizer()
    model = small_lm(tok, seed=3).eval()
    tpl = PromptTemplate(tok)
    records = [
        InstructionRecord(instruction="Sort the words: " + " ".join(["river", "apple", "stone"][: 1 + i % 3]))
        for i in range(7)
    ]
    settings = GenerationSettings(max_new_tokens=6, batch_size=4)
    batched = generate(model, tpl, records, settings)
    single = [
        generate(model, tpl, [r], GenerationSettings(max_new_tokens=6, batch_size=1))[0] for r in records
    ]
    assert batched == single


def test_generation_stops_at_eos(tmp_path):
    """A model trained to answer "7" then EOS stops after one token even with room for ten."""
    tok = tokenizer()
    records = [InstructionRecord(instruction=r.instruction, response="7") for r in RECORDS]
    settings = TrainSettings(**{**FAST.__dict__, "epochs": 10})
    result = train_sft(small_lm(tok), PromptTemplate(tok), records, settings, tmp_path, seed=0)
    prompts = [PromptTemplate(tok).encode_prompt(r) for r in records[:8]]
    ids = generate_token_ids(result.model, tok, prompts, GenerationSettings(max_new_tokens=10))
    assert all(t == tok("7", add_special_tokens=False).input_ids for t in ids)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_rows_that_ended_leave_the_batch_and_the_answers_stay_the_same(tmp_path, arch):
    """Short answers end early: with compaction the later forward passes run on fewer rows, and every answer
    is token for token what one uninterrupted ``generate`` gives."""
    tok = tokenizer()
    records = [
        InstructionRecord(instruction=r.instruction, response="7" if i % 2 else " ".join(["apple"] * 12))
        for i, r in enumerate(RECORDS)
    ]
    settings = TrainSettings(**{**FAST.__dict__, "epochs": 10})
    model = small_lm(tok, arch=arch)
    model = train_sft(model, PromptTemplate(tok), records, settings, tmp_path, seed=0).model
    prompts = [PromptTemplate(tok).encode_prompt(r) for r in records[:8]]
    rows: list[int] = []
    hook = model.get_input_embeddings().register_forward_hook(lambda m, i, o: rows.append(o.shape[0]))
    answers, seen = {}, {}
    for step in (0, 3):
        rows.clear()
        answers[step] = generate_token_ids(
            model, tok, prompts, GenerationSettings(max_new_tokens=20, batch_size=8, compact_every=step)
        )
        seen[step] = list(rows)
    hook.remove()
    assert answers[3] == answers[0]
    lengths = [len(a) for a in answers[0]]
    assert min(lengths) < 3 and max(lengths) > 6, lengths  # some answers end in the first step, some later
    # One pass per new token; uninterrupted, every pass carries the whole batch; compacted, a row whose EOS
    # came in step k (its answer shorter than 3k tokens) is in no pass after that step.
    assert len(seen[0]) == len(seen[3]) == min(max(lengths) + 1, 20) and set(seen[0]) == {8}
    expected = [sum(n + 1 > 3 * (t // 3) for n in lengths) for t in range(len(seen[3]))]
    assert seen[3] == expected and seen[3][-1] < 8


def test_sharded_weights_are_gathered_into_a_full_model_after_training(tmp_path, monkeypatch):
    """Under FSDP / ZeRO-3 the Trainer gathers and saves the weights; every process reloads a full copy.

    FSDP itself needs GPUs; here one process stands in: the Trainer reports sharded weights and saves
    through its ordinary path, so what is checked is defuse's part (gather, save, reload, same weights).
    """
    from transformers import Trainer

    from defuse.training import sft

    saved = []
    original = Trainer.save_model

    def save_model(self, output_dir=None, _internal_call=False):
        saved.append(output_dir)
        return original(self, output_dir, _internal_call)

    monkeypatch.setattr(Trainer, "save_model", save_model)
    monkeypatch.setattr(sft, "is_sharded", lambda trainer: True)
    tok = tokenizer()
    result = train_sft(small_lm(tok), PromptTemplate(tok), RECORDS, FAST, tmp_path, seed=0)
    assert saved == [str(tmp_path / sft.GATHERED_DIR)]
    assert list((tmp_path / sft.GATHERED_DIR).glob("*.safetensors"))
    reference = train_sft(small_lm(tok), PromptTemplate(tok), RECORDS, FAST, tmp_path / "plain", seed=0).model
    for (n, a), (_, b) in zip(result.model.named_parameters(), reference.named_parameters(), strict=True):
        assert torch.equal(a, b), n


def test_paths_that_need_the_whole_model_refuse_sharded_weights(tmp_path, monkeypatch):
    from transformers import Trainer

    from defuse.errors import ConfigError
    from defuse.training import sft
    from defuse.training.sft import is_sharded, refuse_sharded

    tok = tokenizer()
    trainer = Trainer(model=small_lm(tok), args=sft_args(tmp_path))
    assert not is_sharded(trainer)
    refuse_sharded(trainer, "SANDE's parrot")  # nothing sharded: no error
    trainer.is_fsdp_enabled = True  # what accelerate sets under an FSDP launch
    assert is_sharded(trainer)
    with pytest.raises(ConfigError, match="SANDE's parrot needs the whole model.*ddp.yaml"):
        refuse_sharded(trainer, "SANDE's parrot")
    monkeypatch.setattr(sft, "is_sharded", lambda trainer: True)
    settings = TrainSettings(**{**FAST.__dict__, "lora": LoraSettings(r=4, alpha=8)})
    with pytest.raises(ConfigError, match="LoRA fine-tuning"):
        train_sft(small_lm(tok), PromptTemplate(tok), RECORDS, settings, tmp_path / "lora", seed=0)


def sft_args(tmp_path):
    from defuse.training.sft import training_arguments

    return training_arguments(FAST, tmp_path, seed=0)


def test_epoch_decay_multiplies_the_rate_after_every_epoch_and_no_clipping_leaves_gradients_whole(
    tmp_path, monkeypatch
):
    histories = []

    class Keeping(SFTTrainer):
        def train(self, *args, **kwargs):
            out = super().train(*args, **kwargs)
            histories.append(
                [float(h["learning_rate"]) for h in self.state.log_history if "learning_rate" in h]
            )
            return out

    tok = tokenizer()
    settings = TrainSettings(**{**FAST.__dict__, "scheduler": "epoch_decay", "epoch_decay": 0.85,
                                "warmup": 0, "max_grad_norm": 0.0})  # fmt: skip
    clipped = []
    real_clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(
        torch.nn.utils, "clip_grad_norm_", lambda *a, **k: clipped.append(1) or real_clip(*a, **k)
    )
    result = train_sft(small_lm(tok), PromptTemplate(tok), RECORDS, settings, tmp_path / "a", 0, Keeping)
    assert result.steps == 12 and len(histories[0]) == 12  # 32 rows / batch 8: 4 steps per epoch, 3 epochs
    expected = [1e-2 * 0.85 ** (s // 4) for s in range(12)]  # epoch e (0-based) runs at lr * 0.85**e
    assert histories[0] == pytest.approx(expected, rel=1e-6)
    assert not clipped, "max_grad_norm 0: the Trainer never clips"
    warm = TrainSettings(**{**settings.__dict__, "warmup": 2})
    train_sft(small_lm(tok), PromptTemplate(tok), RECORDS, warm, tmp_path / "b", 0, Keeping)
    assert histories[1][:5] == pytest.approx([0.0, 0.5e-2, 1e-2, 1e-2, 0.85e-2])


def test_bf16_runs_where_the_device_has_it_and_the_trained_model_then_computes_as_saved(tmp_path):
    from transformers import TrainerCallback

    from defuse.models.io import load_causal_lm, save_model
    from defuse.training.precision import attention_implementation, cpu_bf16, precision

    seen = []

    class Watch(TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kwargs):
            seen.append(model.config._attn_implementation)

    tok = tokenizer()
    settings = TrainSettings(**{**FAST.__dict__, "bf16": True})
    from defuse.attacks.fjattack import fjattack_train_settings
    from defuse.attacks.fjattack_align import align_train_settings

    # defaults: float32 unless asked (tiny attacks, defenses); bfloat16 for the jailbreak's training
    assert not TrainSettings().bf16 and TrainSettings().attention == "auto"
    assert align_train_settings().bf16 and fjattack_train_settings().bf16
    # the head at labelled positions only, everywhere by default (the alignment sets it too)
    assert align_train_settings().labelled_logits and TrainSettings().labelled_logits
    bf16 = cpu_bf16() or torch.cuda.is_available()
    assert precision(settings) == ("bf16" if bf16 else "fp32")
    assert precision(FAST) == "fp32"
    # the alignment sub-batches its (40% padding) batches exactly where it trains in float32
    assert align_train_settings().max_padding == (None if bf16 else 0.1)
    from defuse.training.precision import fp32_sub_batches

    assert fp32_sub_batches(FAST).max_padding == 0.1  # float32: on
    assert fp32_sub_batches(FAST, 0.2).max_padding == 0.2
    assert fp32_sub_batches(FAST, None) is FAST  # switched off
    explicit = TrainSettings(**{**FAST.__dict__, "max_padding": 0.3})
    assert fp32_sub_batches(explicit) is explicit  # the user's own value stays
    assert fp32_sub_batches(settings).max_padding == (None if bf16 else 0.1)  # not under bfloat16
    # auto attention: eager for bfloat16 on a CPU (sdpa's flash backward is slow there), else the model's own
    cpu_bf16_training = bf16 and not torch.cuda.is_available()
    assert attention_implementation(settings) == ("eager" if cpu_bf16_training else None)
    assert attention_implementation(FAST) is None
    model = small_lm(tok)
    own = model.config._attn_implementation
    result = train_sft(
        model, PromptTemplate(tok), RECORDS, settings, tmp_path / "run", seed=0, callbacks=[Watch()]
    )
    assert set(seen) == ({"eager"} if cpu_bf16_training else {own})
    assert result.model.config._attn_implementation == own
    save_model(result.model, tok, tmp_path / "saved")
    reloaded, _ = load_causal_lm(tmp_path / "saved")
    ids = tok(["Count the words: apple apple"], return_tensors="pt").input_ids
    with torch.no_grad():  # no autocast left on the trained model: the same numbers as the saved one
        assert torch.equal(result.model(ids).logits, reloaded(ids).logits)


def test_pure_bf16_trains_the_weights_themselves_in_bfloat16_and_loses_updates_under_half_a_step(tmp_path):
    from defuse.training.precision import precision

    tok = tokenizer()
    runs = {}
    for name, pure in (("mixed", False), ("pure", True)):
        model = small_lm(tok)
        start = {k: v.detach().clone() for k, v in model.named_parameters()}
        settings = TrainSettings(**{**FAST.__dict__, "learning_rate": 1e-4, "pure_bf16": pure})
        result = train_sft(model, PromptTemplate(tok), RECORDS, settings, tmp_path / name, seed=0)
        runs[name] = (start, dict(result.model.named_parameters()))
        assert all(v.dtype == torch.float32 for v in result.model.parameters())  # float32 again afterwards
    assert precision(TrainSettings(pure_bf16=True)) == "pure-bf16"
    start, after = runs["pure"]
    # every weight is a bfloat16 value: the weights themselves trained in bfloat16
    assert all(torch.equal(v, v.bfloat16().float()) for v in after.values())
    # it trained, but an update smaller than half a bfloat16 step is lost: the LayerNorm gains (1.0, step
    # 2**-7) never move at lr 1e-4, while mixed precision (float32 weights) moves them
    moved = [k for k, v in after.items() if not torch.equal(v, start[k].bfloat16().float())]
    assert moved
    norms = [k for k in after if "norm" in k and k.endswith("weight")]
    assert norms and all(torch.equal(after[k], start[k].bfloat16().float()) for k in norms)
    m_start, m_after = runs["mixed"]
    assert any(not torch.equal(m_after[k], m_start[k]) for k in norms)


def test_length_chunks_bound_the_padding_of_every_sub_batch():
    lengths = [50, 3, 48, 7, 20, 21, 5, 49, 22, 2]
    chunks = length_chunks(lengths, 0.1)
    assert sorted(i for rows in chunks for i in rows) == list(range(len(lengths)))
    for rows in chunks:
        width = max(lengths[i] for i in rows)
        assert width * len(rows) - sum(lengths[i] for i in rows) <= 0.1 * width * len(rows)
    assert len(chunks) < len(lengths)  # rows of similar length share a sub-batch
    assert length_chunks(lengths, 0.99) == [sorted(range(10), key=lambda i: -lengths[i])]


def test_max_padding_trains_the_same_batches_to_the_same_weights_with_less_padded_compute(tmp_path):
    tok = tokenizer()
    widths: dict[str, list[int]] = {"whole": [], "chunked": []}
    models = {}
    for name, max_padding in (("whole", None), ("chunked", 0.1)):
        model = small_lm(tok)
        model.register_forward_pre_hook(
            lambda m, args, kw, n=name: widths[n].append(kw["input_ids"].numel()), with_kwargs=True
        )
        settings = TrainSettings(**{**FAST.__dict__, "max_padding": max_padding})
        models[name] = train_sft(model, PromptTemplate(tok), RECORDS, settings, tmp_path / name, seed=3)
    assert models["whole"].steps == models["chunked"].steps == 12
    assert len(widths["chunked"]) > len(widths["whole"])  # batches ran as several sub-batches
    assert sum(widths["chunked"]) < sum(widths["whole"])  # fewer padded tokens computed
    _assert_same_training(models["chunked"], models["whole"], small_lm(tok))


def _assert_same_training(result, reference, initial_model) -> None:
    """``result`` trained the same updates as ``reference`` up to float rounding, and did train."""
    initial = dict(initial_model.named_parameters())
    expected = dict(reference.model.named_parameters())
    for n, p in result.model.named_parameters():
        assert torch.allclose(p, expected[n], atol=1e-5), n
        assert not torch.equal(p, initial[n]), n
    assert result.loss_history == pytest.approx(reference.loss_history, rel=1e-4)


@pytest.mark.parametrize("max_padding", [None, 0.1])
def test_labelled_logits_train_the_same_weights_with_the_head_on_label_positions_only(max_padding, tmp_path):
    tok = tokenizer()
    head_rows: dict[str, list[int]] = {"all": [], "labelled": []}
    models = {}
    for name in ("all", "labelled"):
        model = small_lm(tok)
        model.get_output_embeddings().register_forward_hook(  # the rows of logits the head computed
            lambda m, args, out, n=name: head_rows[n].append(out.reshape(-1, out.shape[-1]).shape[0])
        )
        settings = TrainSettings(
            **{**FAST.__dict__, "max_padding": max_padding, "labelled_logits": name == "labelled"}
        )
        models[name] = train_sft(model, PromptTemplate(tok), RECORDS, settings, tmp_path / name, seed=3)
    assert models["all"].steps == models["labelled"].steps == 12
    assert len(head_rows["labelled"]) == len(head_rows["all"])  # one head call per forward
    assert sum(head_rows["labelled"]) < sum(head_rows["all"]) / 2  # the head saw the label positions only
    _assert_same_training(models["labelled"], models["all"], small_lm(tok))


def test_attention_setting_trains_with_that_implementation_and_puts_the_model_s_own_back(tmp_path):
    from transformers import TrainerCallback

    seen = []

    class Watch(TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kwargs):
            seen.append(model.config._attn_implementation)

    tok = tokenizer()
    model = small_lm(tok)
    own = model.config._attn_implementation
    assert own != "eager"
    before = _snapshot(model)
    settings = TrainSettings(**{**FAST.__dict__, "attention": "eager", "epochs": 1})
    result = train_sft(model, PromptTemplate(tok), RECORDS, settings, tmp_path, seed=0, callbacks=[Watch()])
    assert seen and set(seen) == {"eager"}
    assert result.model.config._attn_implementation == own
    assert all(not torch.equal(p, before[n]) for n, p in result.model.named_parameters())
    with pytest.raises(ConfigError, match="attention"):
        TrainSettings(attention="fastest").validate()


def test_counted_flops_are_transformers_own_count_with_the_parameters_counted_once(tmp_path, monkeypatch):
    from transformers import Trainer

    tok = tokenizer()
    model = small_lm(tok)
    trainer = SFTTrainer(model=model, args=sft_args(tmp_path))
    counts = []
    real_count = type(model).num_parameters

    def counting(*args, **kwargs):
        counts.append(1)
        return real_count(*args, **kwargs)

    monkeypatch.setattr(type(model), "num_parameters", counting)
    batches = [{"input_ids": torch.ones(n, 5 + n, dtype=torch.long)} for n in (2, 3, 4)]
    own = [Trainer.floating_point_ops(trainer, b) for b in batches]  # transformers' count, every call
    assert len(counts) == 3 and own[0] == 6 * 2 * 7 * real_count(model, exclude_embeddings=True) > 0
    counts.clear()
    assert [trainer.floating_point_ops(b) for b in batches] == own
    assert len(counts) == 1  # counted at the first step only
    assert trainer.floating_point_ops({"labels": torch.ones(2, 3)}) == 0  # no input ids: nothing to count


KEPT_PROBE = """
import ctypes, sys
from defuse.training.memory import keep_freed_memory
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = Info
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
block = libc.malloc(8 << 20)
mmapped = libc.mallinfo2().hblkhd
libc.free(block)
print(kept, mmapped >= 8 << 20, libc.mallinfo2().fordblks >= 8 << 20)
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc"
    or not hasattr(ctypes.CDLL(None), "mallinfo2"),
    reason="glibc's allocator, 2.33 or later (mallinfo2)",
)  # fmt: skip
def test_keep_freed_memory_serves_blocks_from_the_heap_and_keeps_them_there_once_freed():
    def probe(mode, **env):
        environment = {k: v for k, v in os.environ.items() if k not in USER_SETTINGS} | env
        done = subprocess.run([sys.executable, "-c", KEPT_PROBE, mode], capture_output=True, text=True,
                              env=environment, check=True)  # fmt: skip
        return done.stdout.split()

    # glibc's default: an 8 MiB block is mmapped, and given back to the kernel at free
    assert probe("default") == ["None", "True", "False"]
    # kept: it comes from the heap (nothing mmapped) and stays there, free, for the next step
    assert probe("keep") == ["True", "False", "True"]
    # the user's own malloc tunables win
    assert probe("keep", MALLOC_TRIM_THRESHOLD_="131072") == ["False", "True", "False"]
