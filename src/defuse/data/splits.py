"""Deterministic train/test splits that never share a prompt."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TypeVar

from defuse.errors import ConfigError

T = TypeVar("T")


def split_disjoint(
    records: Sequence[T], test_size: int | float, seed: int, key: Callable[[T], str]
) -> tuple[list[T], list[T]]:
    """Split ``records`` into (train, test) so that no key appears on both sides.

    Records sharing a key are kept together (on one side). The split is a seeded shuffle of the
    distinct keys, so the same seed always gives the same split.

    Args:
        records: The records to split.
        test_size: A fraction in (0, 1) of the distinct keys, or a count of them.
        seed: Shuffle seed.
        key: Maps a record to its prompt identity (e.g. the rendered user text).

    Raises:
        ConfigError: when ``test_size`` is not a fraction in (0, 1) or a count below the number of keys.
    """
    groups: dict[str, list[T]] = {}
    for r in records:
        groups.setdefault(key(r), []).append(r)
    keys = list(groups)
    if isinstance(test_size, float):
        if not 0.0 < test_size < 1.0:
            raise ConfigError("test_size", f"a fraction must be in (0, 1), got {test_size}")
        n_test = max(1, round(len(keys) * test_size))
    else:
        n_test = int(test_size)
    if not 0 < n_test < len(keys):
        raise ConfigError("test_size", f"needs 0 < test count < {len(keys)} distinct prompts, got {n_test}")
    random.Random(seed).shuffle(keys)
    test_keys = set(keys[:n_test])
    train = [r for r in records if key(r) not in test_keys]
    test = [r for r in records if key(r) in test_keys]
    return train, test
