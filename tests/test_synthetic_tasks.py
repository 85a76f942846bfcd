import pytest

from defuse.data.synthetic_tasks import TASK_KINDS, WORDS, SuiteConfig, make_task_suite
from defuse.errors import ConfigError


def _expected(instruction: str, data: str, task: str) -> str:
    if task == "arithmetic":
        nums = [int(t.strip("?.")) for t in instruction.split() if t.strip("?.").isdigit()]
        return str(nums[0] + nums[1] if " plus " in instruction else nums[0] - nums[1])
    if task == "sentiment":
        positive = ("wonderful", "great", "lovely", "brilliant", "charming", "delightful")
        return "positive" if any(w in data for w in positive) else "negative"
    words = data.split()
    if task == "contains":
        return "yes" if instruction.split()[3] in words else "no"
    return {
        "reverse": " ".join(words[::-1]),
        "sort": " ".join(sorted(words)),
        "copy": " ".join(words),
        "count": str(len(words)),
        "first_letters": " ".join(w[0] for w in words),
        "last_word": words[-1],
        "first_word": words[0],
        "second_word": words[1],
    }[task]


def test_every_kind_present_balanced_and_answers_are_exact():
    train, test = make_task_suite(SuiteConfig(n_train=1100, n_test=220, kinds=TASK_KINDS, seed=3))
    assert len(train) == 1100 and len(test) == 220
    for kind in TASK_KINDS:
        assert sum(r.task == kind for r in train) == 100
        assert sum(r.task == kind for r in test) == 20
    for r in train + test:
        assert r.response == _expected(r.instruction, r.input, r.task), r


def test_train_and_test_share_no_prompt_and_prompts_are_distinct():
    train, test = make_task_suite(SuiteConfig(n_train=1200, n_test=200))
    prompts_train = [r.user_text for r in train]
    assert len(set(prompts_train)) == len(prompts_train)
    assert not set(prompts_train) & {r.user_text for r in test}


def test_deterministic_under_seed_and_seed_matters():
    a = make_task_suite(SuiteConfig(n_train=200, n_test=40, seed=1))
    b = make_task_suite(SuiteConfig(n_train=200, n_test=40, seed=1))
    c = make_task_suite(SuiteConfig(n_train=200, n_test=40, seed=2))
    assert a == b
    assert a != c


def test_word_lists_respect_bounds():
    train, _ = make_task_suite(SuiteConfig(n_train=160, n_test=16, kinds=("copy",), min_words=2, max_words=3))
    for r in train:
        words = r.input.split()
        assert 2 <= len(words) <= 3 and set(words) <= set(WORDS)


@pytest.mark.parametrize(
    "cfg",
    [
        SuiteConfig(n_train=0),
        SuiteConfig(kinds=("reverse", "nonsense")),
        SuiteConfig(kinds=()),
        SuiteConfig(min_words=4, max_words=2),
        SuiteConfig(n_train=5000, n_test=10, kinds=("arithmetic",)),
    ],
)
def test_nonsense_settings_are_refused(cfg):
    with pytest.raises(ConfigError) as info:
        make_task_suite(cfg)
    assert "\n" not in str(info.value)
