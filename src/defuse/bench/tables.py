"""The results as tables: one per scenario, a row per defense (no defense first), each metric as
"mean ± spread" in percent over the seeds. The same rows feed ``results.md`` and the terminal.

Columns: ``defense``, the metrics any row of the scenario has (ASR, CACC, AACC, FTR, over-refusal for the
jailbreak, the near-miss rate for composite triggers), ``n`` (test prompts per seed), ``seeds`` (finished of
planned) and ``train s`` (training seconds per seed, mean).
"""

from __future__ import annotations

from dataclasses import dataclass

from defuse.bench.spec import NO_DEFENSE
from defuse.defenses.merge_probe import PROBE_NOTE, summary_rows
from defuse.scenarios import get_scenario

METRIC_LABELS = {
    "asr": "ASR",
    "cacc": "CACC",
    "aacc": "AACC",
    "ftr": "FTR",
    "over_refusal": "over-refusal",
    "negative_asr": "near-miss",
}
ALWAYS = ("asr", "cacc")
FOOTER = (
    "Mean ± sample standard deviation over seeds, in percent; n: test prompts per seed; seeds: finished "
    "of planned; train s: training seconds per seed (mean)."
)


@dataclass
class ScenarioTable:
    """One scenario's table: a title, column names, rows of cell texts, and notes."""

    scenario: str
    kind: str
    title: str
    columns: list[str]
    rows: list[list[str]]
    notes: list[str]


def mean_spread(stat: dict | None) -> str:
    """``"12.3 ± 4.5"`` (percent), ``"12.3"`` with one value, ``"n/a"`` without any."""
    if not stat or stat["mean"] is None:
        return "n/a"
    text = f"{100 * stat['mean']:.1f}"
    return text + (f" ± {100 * stat['stdev']:.1f}" if stat["stdev"] is not None else "")


def _counts(agg: dict, keys: tuple[str, ...]) -> str:
    parts = []
    for key in keys:
        values = agg["counts"].get(key)
        if not values:
            parts.append("-")
        else:
            parts.append(str(values[0]) if min(values) == max(values) else f"{min(values)}-{max(values)}")
    return "/".join(parts) if any(p != "-" for p in parts) else "-"


def scenario_tables(results: dict) -> list[ScenarioTable]:
    """One :class:`ScenarioTable` per scenario of the results, in the bench file's order."""
    tables = []
    planned = len(results["bench"]["seeds"])
    for scenario in results["bench"]["scenarios"]:
        name, kind = scenario["name"], scenario["scenario"]
        aggs = [a for a in results["aggregates"] if a["scenario"] == name]
        shown = [
            k
            for k in METRIC_LABELS
            if k in ALWAYS or any(a["metrics"].get(k, {}).get("mean") is not None for a in aggs)
        ]
        columns = [
            "defense",
            *(METRIC_LABELS[k] for k in shown),
            get_scenario(kind).n_label,
            "seeds",
            "train s",
        ]
        rows = []
        for a in aggs:
            label = "no defense" if a["defense"] == NO_DEFENSE else a["defense"]
            if a["method"] and a["method"] != a["defense"]:
                label += f" ({a['method']})"
            train = a["train_s"]["mean"]
            rows.append(
                [
                    label,
                    *(mean_spread(a["metrics"].get(k)) for k in shown),
                    _counts(a, get_scenario(kind).n_keys),
                    f"{a['n_done']}/{planned}",
                    "-" if train is None else f"{train:.1f}",
                ]
            )
        unfinished = [c for c in results["cells"] if c["scenario"] == name and c["status"] != "done"]
        notes = [get_scenario(kind).note]
        if unfinished:
            listed = ", ".join(
                f"{'no defense' if c['defense'] == NO_DEFENSE else c['defense']} seed {c['seed']} "
                f"({c['status']})"
                for c in unfinished
            )
            notes.append(f"Not finished: {listed}.")
        title = f"{name} ({kind})"
        tables.append(ScenarioTable(name, kind, title, columns, rows, notes))
    return tables


def markdown_table(table: ScenarioTable) -> str:
    """The table as GitHub Markdown (the defense column left-aligned, the others right-aligned)."""
    lines = [
        "| " + " | ".join(table.columns) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(table.columns) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in table.rows]
    return "\n".join(lines)


def probe_markdown(results: dict, scenario: str) -> str | None:
    """The merge probe of every finished run of ``scenario`` that recorded one (MB-Defense;
    :func:`~defuse.defenses.merge_probe.summary_rows`), a row per run and stage; None when no run did."""
    cells = [c for c in results["cells"] if c["scenario"] == scenario and c.get("merge_probe")]
    if not cells:
        return None
    columns, rows = summary_rows(cells)
    return markdown_table(ScenarioTable(scenario, "", "", columns, rows, []))


def results_markdown(results: dict) -> str:
    """``results.md``: a header, then per scenario its table, notes and plots."""
    git = results["git"] or "unknown"
    seeds = ", ".join(map(str, results["bench"]["seeds"]))
    out = [
        f"# Benchmark `{results['name']}`",
        "",
        f"Written {results['created']} by defuse {results['versions'].get('defuse', '?')} (git {git}); "
        f"seeds {seeds}. Run directories under `runs/`, per-cell logs under `logs/`, every number in "
        "`results.json`.",
        "",
        FOOTER,
        "",
    ]
    plots = {p for p in results["plots"]}
    for table in scenario_tables(results):
        out += [f"## {table.title}", "", markdown_table(table), ""]
        out += [*table.notes, ""]
        probe = probe_markdown(results, table.scenario)
        if probe:
            out += [PROBE_NOTE, "", probe, ""]
        for suffix, alt in (
            ("asr-vs-utility", "ASR vs clean utility"),
            ("asr-before-after", "ASR before/after"),
        ):
            path = f"plots/{table.scenario}-{suffix}.png"
            if path in plots:
                out.append(f"![{table.scenario}: {alt}]({path})")
        out.append("")
    return "\n".join(out).rstrip() + "\n"
