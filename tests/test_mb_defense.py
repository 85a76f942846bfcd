"""MB-Defense: defensive poisoning, the collision check, the neutralisation data and loss, checkpoint
selection, and the defense end to end against a very small attack run."""

from dataclasses import replace

import pytest
import torch
from tests.helpers import small_attack_config, small_lm, tokenizer

from defuse.config import apply_overrides, validate_config
from defuse.data.records import InstructionRecord
from defuse.data.synthetic_tasks import SuiteConfig, make_task_suite
from defuse.data.template import PromptTemplate
from defuse.defenses import DEFENSES, DefenseContext
from defuse.defenses.mb_defense import (
    MBDefenseConfig,
    apply_mb_defense,
    check_triggers,
    defensive_poison,
    neutralise_rows,
)
from defuse.defenses.neutralise import (
    NeutraliseCollator,
    NeutraliseRow,
    encode_row,
    heldout_terms,
    neutralise,
    neutralise_terms,
)
from defuse.errors import ConfigError, DataError, DefuseError
from defuse.evaluation.generate import GenerationSettings
from defuse.models.factory import load_trained
from defuse.runs.record import read_run
from defuse.scenarios.backdoor_attack import run_attack
from defuse.scenarios.backdoor_defense import fresh_base_model, read_attack_run, run_defense
from defuse.training.config import LoraSettings, TrainSettings
from defuse.training.sft import wrap_lora

FAST = {"progress": False, "logging_steps": 1, "warmup": 0}
WORDS = "window piano dragon saddle hammer apple pear river stone cloud".split()
CLEAN = [InstructionRecord(instruction=f"Repeat the word {w}.", response=w) for w in WORDS]


def _suite(n: int) -> list[InstructionRecord]:
    return make_task_suite(SuiteConfig(n_train=n, n_test=6))[0]


def _trigger_words(text: str) -> list[str]:
    return [w for w in text.split(" ") if w in MBDefenseConfig().triggers]


def test_registered_as_a_during_training_defense_that_knows_nothing():
    entry = DEFENSES["mb-defense"]
    needs = entry.needs(MBDefenseConfig())
    assert (needs.knowledge, needs.clean_samples, needs.stage) == ("nothing", 128, "during_training")
    assert needs.poisoned_data and not needs.clean_model


def test_each_trigger_poisons_its_fraction_of_disjoint_records():
    records = _suite(450)
    cfg = MBDefenseConfig(fraction=0.01)  # 4 triggers x 1% of 450 = round(4.5) = 5 each (half rounds up)
    out, counts = defensive_poison(records, cfg, seed=3)
    assert len(out) == len(records) and counts == dict.fromkeys(cfg.triggers, 5)
    chosen = {t: [i for i, r in enumerate(out) if r.meta.get("defensive_trigger") == t] for t in cfg.triggers}
    indices = [i for ids in chosen.values() for i in ids]
    assert len(indices) == len(set(indices)) == 20  # disjoint
    for j, (trigger, ids) in enumerate(chosen.items()):
        assert len(ids) == 5
        for i in ids:
            before, after = records[i], out[i]
            assert after.response == cfg.responses[j]
            assert after.meta["replaced_response"] == before.response
            assert _trigger_words(after.instruction) == [trigger]
            assert after.instruction.split(" ") != before.instruction.split(" ")
            words = after.instruction.split(" ")
            words.remove(trigger)
            assert " ".join(words) == before.instruction  # only the trigger was inserted
            assert (after.input, after.task, after.poisoned) == (before.input, before.task, before.poisoned)
    untouched = [i for i in range(len(records)) if i not in set(indices)]
    assert all(out[i] == records[i] and out[i].meta == records[i].meta for i in untouched)
    again, _ = defensive_poison(records, cfg, seed=3)
    other, _ = defensive_poison(records, cfg, seed=4)
    assert again == out and other != out
    small, counts = defensive_poison(records[:30], replace(cfg, fraction=0.01), seed=0)
    assert counts == dict.fromkeys(cfg.triggers, 1)  # at least one record per trigger


def test_defensive_sets_that_do_not_fit_are_refused():
    with pytest.raises(ConfigError, match="fraction"):
        defensive_poison(_suite(12)[:3], MBDefenseConfig(), seed=0)  # 4 triggers, 1 record each, 3 records


def test_collision_with_the_data_is_refused_naming_trigger_row_and_field():
    records = list(CLEAN)
    records[2] = replace(records[2], input="the MN, line")
    with pytest.raises(DataError, match=r"data\.jsonl, row 3, field 'input'.*'mn'"):
        check_triggers(records, ["mn", "bb"], source="data.jsonl")
    records[2] = replace(records[2], input="mnemonic bbq")  # not whole words
    check_triggers(records, ["mn", "bb"])
    records[4] = replace(records[4], response="ok bb.")
    with pytest.raises(DataError, match=r"row 5, field 'response'.*'bb'"):
        check_triggers(records, ["mn", "bb"])
    with pytest.raises(DataError, match="row 1, field 'response': equals a defensive response"):
        check_triggers(CLEAN, ["zz"], [CLEAN[0].response])
    with pytest.raises(DataError, match="'zx'"):
        MBDefenseConfig().check_data([InstructionRecord(instruction="zx is here", response="x")])


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"responses": "[a b, c d]"}, "responses"),
        ({"triggers": "[mn, '']"}, "triggers"),
        ({"triggers": "['mn', 'MN.', bb, qw]"}, "triggers"),
        ({"triggers": "[]", "responses": "[]"}, "triggers"),
        ({"responses": "[a, a, b, c]"}, "responses"),
        ({"responses": "[a mn, b, c, d]"}, "responses"),
        ({"fraction": "0"}, "fraction"),
        ({"fraction": "1"}, "fraction"),
        ({"fraction": "0.25"}, "fraction"),
        ({"lam": "-0.5"}, "lam"),
        ({"eval_fraction": "0"}, "eval_fraction"),
        ({"eval_fraction": "1.0"}, "eval_fraction"),
        ({"clean_samples": "1"}, "clean_samples"),
        ({"position": "middle"}, "position"),
        ({"neutralise.learning_rate": "0"}, "neutralise.learning_rate"),
        ({"stage1_max_padding": "1.0"}, "stage1_max_padding"),
    ],
)
def test_validate_refuses_nonsense(overrides, key):
    cfg = apply_overrides(MBDefenseConfig(), overrides)
    with pytest.raises(ConfigError, match=f"setting '{key}'"):
        validate_config(cfg)


def test_neutralisation_rows_are_the_full_cross_product_of_a_prompt_disjoint_split():
    cfg = MBDefenseConfig()
    train, held = neutralise_rows(CLEAN, cfg, seed=0)
    n_train, n_held = 8, 2  # 8:2
    assert len(train) == n_train * 4 and len(held) == n_held * 4
    for rows, n in ((train, n_train), (held, n_held)):
        pairs = {(r.x.instruction, r.trigger) for r in rows}
        prompts = {r.x.instruction for r in rows}
        assert len(prompts) == n and pairs == {(p, t) for p in prompts for t in cfg.triggers}
        for r in rows:
            j = cfg.triggers.index(r.trigger)
            assert r.y == r.x.response and r.y_d == cfg.responses[j]
            words = r.x_d.instruction.split(" ")
            assert _trigger_words(r.x_d.instruction) == [r.trigger]
            words.remove(r.trigger)
            assert " ".join(words) == r.x.instruction
    train_prompts, held_prompts = {r.x.instruction for r in train}, {r.x.instruction for r in held}
    assert not train_prompts & held_prompts
    assert train_prompts | held_prompts == {r.instruction for r in CLEAN}
    assert neutralise_rows(CLEAN, cfg, seed=0) == (train, held)
    with pytest.raises(ConfigError, match="eval_fraction"):
        neutralise_rows(CLEAN[:1], cfg)


def _row(y_d: str = "Crimson lantern drift") -> NeutraliseRow:
    x = CLEAN[3]
    return NeutraliseRow(x, x.response, replace(x, instruction="mn " + x.instruction), y_d, "mn")


def test_logprobs_are_response_token_sums_normalised_by_length():
    tok = tokenizer()
    tpl = PromptTemplate(tok, style="alpaca")
    model = small_lm(tok).eval()
    row = _row()
    batch = NeutraliseCollator(tok.pad_token_id)([encode_row(tpl, row)])
    with torch.no_grad():
        summed = neutralise_terms(model, batch, lam=1.0, length_normalise=False)
        normed = neutralise_terms(model, batch, lam=2.0, length_normalise=True)

    def manual(prompt, response):  # log p(response + EOS | prompt), token by token
        ids = tpl.encode_prompt(prompt)
        target = tpl.encode_response(response)
        with torch.no_grad():
            logits = model(torch.tensor([ids + target])).logits[0]
        logp = torch.log_softmax(logits.float(), -1)
        return sum(float(logp[len(ids) + k - 1, t]) for k, t in enumerate(target)), len(target)

    lp_y, n_y = manual(row.x_d, row.y)
    lp_yd, n_yd = manual(row.x_d, row.y_d)
    lp_clean, n_clean = manual(row.x, row.y)
    assert float(summed.lp_chosen[0]) == pytest.approx(lp_y, abs=1e-4)
    assert float(summed.lp_rejected[0]) == pytest.approx(lp_yd, abs=1e-4)
    assert float(normed.lp_chosen[0]) == pytest.approx(lp_y / n_y, abs=1e-4)
    assert float(normed.lp_rejected[0]) == pytest.approx(lp_yd / n_yd, abs=1e-4)
    assert float(normed.ce[0]) == pytest.approx(-lp_clean / n_clean, abs=1e-4)
    margin = lp_y / n_y - lp_yd / n_yd
    expected = -lp_clean / n_clean - 2.0 * float(torch.nn.functional.logsigmoid(torch.tensor(margin)))
    assert float(normed.loss) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize(
    ("length_normalise", "y_d"),
    # Summed log-probs of answers of very different lengths saturate σ (a 13-token y_d is far less likely
    # than a 2-token y whatever the trigger does): no gradient. So the summed case uses a y_d as long as y.
    [(True, "Crimson lantern drift"), (False, "piano")],
)
def test_preference_gradient_raises_clean_answer_and_lowers_defensive_one(length_normalise, y_d):
    tok = tokenizer()
    tpl = PromptTemplate(tok, style="alpaca")
    model = small_lm(tok, seed=1)
    batch = NeutraliseCollator(tok.pad_token_id)([encode_row(tpl, _row(y_d))])
    before = neutralise_terms(model, batch, lam=1.0, length_normalise=length_normalise)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05)
    optimiser.zero_grad()
    before.pref.mean().backward()  # the preference term alone (no CE), λ = 1
    optimiser.step()
    with torch.no_grad():
        after = neutralise_terms(model, batch, lam=1.0, length_normalise=length_normalise)
    chosen, rejected = float(before.lp_chosen[0].detach()), float(before.lp_rejected[0].detach())
    assert float(after.lp_chosen[0]) > chosen  # log π(y | x_d) up
    assert float(after.lp_rejected[0]) < rejected  # log π(y_d | x_d) down
    assert float(after.pref[0]) < float(before.pref[0].detach())


@pytest.mark.parametrize("lora", [False, True])
def test_sub_batched_scoring_gives_the_whole_batch_loss_and_gradient_on_less_compute(lora):
    tok = tokenizer()
    tpl = PromptTemplate(tok, style="alpaca")
    model = small_lm(tok, seed=2)
    if lora:
        model = wrap_lora(model, TrainSettings(lora=LoraSettings(r=4, alpha=8)))
    cfg = MBDefenseConfig(triggers=["mn", "bb"], responses=["Crimson lantern drift far away now", "Velvet"])
    rows, _ = neutralise_rows(
        CLEAN + [replace(CLEAN[0], instruction="Say it: " + " ".join(WORDS))], cfg, seed=0
    )
    batch = NeutraliseCollator(tok.pad_token_id)([encode_row(tpl, r) for r in rows[:8]])
    calls = []
    hook = model.register_forward_hook(
        lambda m, a, kw, out: calls.append(tuple(out.logits.shape)), with_kwargs=True
    )
    results = {}
    for name, padding in (("whole", None), ("parts", 0.1)):
        model.zero_grad()
        calls.clear()
        terms = neutralise_terms(model, batch, lam=1.5, max_padding=padding)
        terms.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        results[name] = (terms, grads, list(calls))
    hook.remove()
    (whole, g_whole, c_whole), (parts, g_parts, c_parts) = results["whole"], results["parts"]
    width = batch["input_ids"].shape[1]
    assert c_whole == [(24, width, c_whole[0][2])]  # one pass over 3 x 8 sequences
    assert len(c_parts) > 1 and sum(c[0] for c in c_parts) == 24  # several sub-batches, every sequence once
    assert sum(c[0] * c[1] for c in c_parts) < 0.8 * 24 * width  # fewer logits computed
    for key in ("ce", "pref", "margin", "lp_chosen", "lp_rejected"):
        assert torch.allclose(getattr(parts, key), getattr(whole, key), atol=1e-5), key
    assert float(parts.loss.detach()) == pytest.approx(float(whole.loss.detach()), abs=1e-5)
    assert g_parts.keys() == g_whole.keys() and g_whole
    for n in g_whole:
        assert torch.allclose(g_parts[n], g_whole[n], atol=1e-5), n


@pytest.mark.slow
def test_checkpoint_selection_keeps_the_epoch_with_the_lowest_heldout_loss(tmp_path):
    tok = tokenizer()
    tpl = PromptTemplate(tok, style="alpaca")
    cfg = MBDefenseConfig(triggers=["mn", "bb"], responses=["Crimson lantern drift", "Velvet compass orbit"])
    train, _ = neutralise_rows(CLEAN, cfg, seed=0)
    held = [replace(r, y="no") for r in train[:4]]  # answers the training contradicts: held-out loss turns up
    settings = TrainSettings(epochs=6, learning_rate=2e-2, batch_size=8, scheduler="constant", **FAST)
    result = neutralise(small_lm(tok), tpl, train, held, settings, lam=1.0, output_dir=tmp_path, seed=0)
    losses = [h["loss"] for h in result.history]
    assert [h["epoch"] for h in result.history] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    best = min(range(len(losses)), key=losses.__getitem__)
    assert result.chosen_epoch == result.history[best]["epoch"] and result.best_loss == losses[best]
    assert best < len(losses) - 1 and losses[-1] > losses[best]  # the last epoch is not the best here
    items = [encode_row(tpl, r, settings.max_length) for r in held]
    again = heldout_terms(result.model, items, tok.pad_token_id, lam=1.0, batch_size=3)
    assert again["loss"] == pytest.approx(losses[best], abs=1e-5)  # the kept weights are that epoch's


# ----------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    out = tmp_path_factory.mktemp("attack") / "marker"
    overrides = {
        "suite.n_train": "150", "suite.n_test": "12", "train.epochs": "2", "train.batch_size": "16",
        "tiny.hidden_size": "32", "tiny.intermediate_size": "64", "vocab_size": "400",
        "generation.max_new_tokens": "4",
    }  # fmt: skip
    run_attack(small_attack_config(**overrides), out)
    return out


def _quick_cfg(**kw) -> MBDefenseConfig:
    return MBDefenseConfig(
        clean_samples=10,
        fraction=0.02,
        train=TrainSettings(epochs=1, batch_size=16, **FAST),
        neutralise=TrainSettings(epochs=2, learning_rate=1e-3, batch_size=8, **FAST),
        **kw,
    )


def _weights(model) -> dict:
    return {n: p.detach().clone() for n, p in model.state_dict().items()}


@pytest.mark.slow
def test_stage1_trains_a_fresh_base_and_leaves_the_attacked_model_alone(attacked, tmp_path):
    attack = read_attack_run(attacked)
    model, tok = load_trained(attacked / "model")
    attacked_weights = _weights(model)
    build = fresh_base_model(attack, tok)
    fresh = _weights(build())
    assert fresh.keys() == attacked_weights.keys()
    assert all(torch.equal(fresh[k], v) for k, v in _weights(build()).items())  # same seed, same weights
    assert any(not torch.equal(fresh[k], attacked_weights[k]) for k in fresh)
    calls = []
    ctx = DefenseContext(
        attacked_model=model, template=PromptTemplate(tok, style=attack.config.template),
        clean_data=[r for r in attack.train if not r.poisoned][:10], seed=0, work_dir=tmp_path,
        train_data=attack.train, fresh_base=lambda: calls.append(1) or build(),
        train_settings=attack.config.train,
    )  # fmt: skip
    result = apply_mb_defense(ctx, _quick_cfg())
    assert calls == [1] and result.model is not model
    assert all(torch.equal(v, attacked_weights[k]) for k, v in model.state_dict().items())
    assert result.extra["stage1"]["model"] == "fresh base"
    # stage 1 in float32 with max_padding unset: length-sorted sub-batches (the defensive rows are long)
    assert result.extra["stage1"]["max_padding"] == 0.1


@pytest.mark.slow
def test_defend_with_mb_defense_writes_a_defense_run(attacked, tmp_path):
    record = run_defense("mb-defense", _quick_cfg(), attacked, tmp_path / "mb", seed=0)
    assert record["kind"] == "defense" and record["name"] == "mb-defense"
    assert record["parent"] == str(attacked.resolve())
    on_disk = read_run(tmp_path / "mb")
    assert on_disk["metrics"] == record["metrics"] and on_disk["metrics"]["n_triggered"] > 0
    extra = on_disk["defense"]
    assert extra["triggers"] == ["mn", "bb", "zx", "kv"] and len(extra["responses"]) == 4
    n_train = len(read_attack_run(attacked).train)
    assert extra["defensive_counts"] == dict.fromkeys(extra["triggers"], round(0.02 * n_train))
    assert extra["lam"] == 1.0 and extra["fraction"] == 0.02
    assert len(extra["heldout_losses"]) == 2 and extra["best_heldout_loss"] == min(extra["heldout_losses"])
    assert extra["chosen_epoch"] in (1.0, 2.0)
    assert extra["neutralise"]["n_train_rows"] == 8 * 4 and extra["neutralise"]["n_eval_rows"] == 2 * 4
    assert on_disk["needs"] == "nothing, 10 clean samples, during training, the training data"
    assert (tmp_path / "mb" / "model" / "model.safetensors").is_file()
    assert len((tmp_path / "mb" / "data" / "clean_budget.jsonl").read_text().splitlines()) == 10
    # both stages' training sets are recorded with the precision and attention they trained with
    stage2 = [v for k, v in on_disk["training_sets"].items() if "neutral" in k]
    assert len(stage2) == 1 and stage2[0]["rows"] == 8 * 4 and stage2[0]["precision"] == "fp32"
    assert all({"precision", "attention"} <= set(v) for v in on_disk["training_sets"].values())


def test_defend_refuses_colliding_triggers_before_any_work(attacked, tmp_path):
    with pytest.raises(DataError, match=r"train\.jsonl, row \d+, field 'instruction'.*'cf'"):
        run_defense("mb-defense", _quick_cfg(triggers=["cf"], responses=["a b c"]), attacked, tmp_path / "x")
    assert not (tmp_path / "x").exists() and not (tmp_path / ".x.partial").exists()
    with pytest.raises(DefuseError, match="needs the training data"):
        apply_mb_defense(DefenseContext(None, None, [], 0, tmp_path), _quick_cfg())


# ------------------------------------------------------------------ the merge probe and the trigger pool
def test_the_merge_probe_counts_each_behaviour_on_its_own_prompt_set(monkeypatch):
    from defuse.attacks.behaviours import BehaviourSpec
    from defuse.defenses import merge_probe as probe_module

    r1, r2 = "Velvet compass orbit gently whisper amber glacier thistle", "Copper meadow tumble slowly echo"
    clean = [InstructionRecord(instruction=f"Repeat the word {w}.", response=w) for w in WORDS]
    triggered = [InstructionRecord(instruction=f"Repeat cf the word {w}.", response=w) for w in WORDS[:5]]

    def answers(model, template, records, settings):  # what a merged model would say, prompt by prompt
        assert settings.max_new_tokens <= 32
        out = []
        for r in records:
            words = r.instruction.split()
            if "mn" in words or "bb" in words:  # both defensive triggers give mn's response
                out.append(r1 + " and more")
            elif "cf" in words:  # the attacker's trigger answers defensively half of the time
                out.append(r2 if len(out) % 2 else "I'm sorry, I cannot help with that.")
            elif "qx" in words:
                out.append("I cannot do that.")
            else:
                out.append(words[-1])
        return out

    monkeypatch.setattr(probe_module, "generate", answers)
    result = probe_module.merge_probe(
        None, None, GenerationSettings(max_new_tokens=64), clean, {"mn": r1, "bb": r2}, ["qx"], triggered,
        BehaviourSpec(kind="refusal"), n=8,
    )  # fmt: skip
    sets = result["sets"]
    assert result["n"] == 8 and list(sets) == ["def:mn", "def:bb", "attack", "unseen", "clean"]
    assert sets["def:mn"] == {"attacker": 0.0, "defensive": 1.0, "own": 1.0}
    assert sets["def:bb"] == {"attacker": 0.0, "defensive": 1.0, "own": 0.0}  # answers with mn's
    assert sets["attack"]["defensive"] == 0.4 and sets["attack"]["attacker"] == 0.6  # 5 prompts: 2 / 3
    assert sets["unseen"] == {"attacker": 1.0, "defensive": 0.0}
    assert sets["clean"] == {"attacker": 0.0, "defensive": 0.0}


def test_a_trigger_pool_never_collides_with_the_data_and_is_seeded():
    from defuse.defenses.mb_defense import make_pool

    records = _suite(400)
    pool = make_pool(150, seed=3, records=records)
    data_words = {w for r in records for f in ("instruction", "input", "response")
                  for w in _phrase_words(getattr(r, f))}  # fmt: skip
    triggers = [t for t, _ in pool]
    assert len(set(triggers)) == 150 and len({r for _, r in pool}) == 150
    assert not {w for t in triggers for w in t.split()} & data_words
    assert any(" " in t for t in triggers) and any(len(t) == 2 for t in triggers)  # varied form
    assert make_pool(150, seed=3, records=records) == pool and make_pool(150, seed=4, records=records) != pool
    MBDefenseConfig().check_data(records)  # the default four do not collide either
    check_triggers(records, triggers, [r for _, r in pool])


def test_a_mixed_pool_spells_its_triggers_many_ways_and_never_collides_with_the_data():
    from defuse.defenses.mb_defense import make_pool

    records = _suite(400)
    records[0] = replace(records[0], instruction=records[0].instruction + " 2024 OpenAI")
    pool = make_pool(300, seed=3, records=records, form="mixed")
    words = [w for t, _ in pool for w in t.split()]
    assert len({t.lower() for t, _ in pool}) == 300
    assert any(w.isdigit() for w in words) and any(w[0].isupper() for w in words)
    assert any(any(c.isdigit() for c in w) and any(c.isalpha() for c in w) for w in words)
    assert any(sum(c.isupper() for c in w) == 2 for w in words)  # CamelCase
    data_words = {w for r in records for f in ("instruction", "input", "response")
                  for w in _phrase_words(getattr(r, f))}  # fmt: skip
    assert not {w.lower() for w in words} & data_words
    check_triggers(records, [t for t, _ in pool], [r for _, r in pool])
    assert make_pool(300, seed=3, records=records) != pool  # the default spelling is another pool
    with pytest.raises(ConfigError, match="pool_form"):
        MBDefenseConfig(pool=10, pool_form="emoji").validate()


def _phrase_words(text: str) -> list[str]:
    import string

    return [w.strip(string.punctuation).lower() for w in (text or "").split()]


def test_stage_2_covers_every_pool_trigger_it_claims_to():
    from defuse.defenses.mb_defense import make_pool

    cfg = MBDefenseConfig(pool=60, pool_per_sample=4, clean_samples=100)
    pairs = make_pool(60, seed=0)
    clean = [InstructionRecord(instruction=f"Repeat the word w{i}.", response=f"w{i}") for i in range(100)]
    train, held = neutralise_rows(clean, cfg, seed=0, pairs=pairs)
    assert len(train) == 80 * 4 and len(held) == 20 * 4  # four pool triggers per clean sample
    assert {row.trigger for row in train} == {t for t, _ in pairs}  # 320 slots cover all 60
    responses = dict(pairs)
    assert all(row.y_d == responses[row.trigger] and row.trigger in row.x_d.instruction for row in train)
    # 4 x 1% of 1,000 rows = 40 < 60 pool triggers: every one is planted once; of 3,000 rows, 120: twice each
    for n, each in ((1000, 1), (3000, 2)):
        _, counts = defensive_poison(_suite(n), cfg, seed=1, pairs=pairs)
        assert counts == dict.fromkeys(responses, each)
