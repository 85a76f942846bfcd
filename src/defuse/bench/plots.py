"""PNG plots of the results, per scenario (matplotlib's Agg canvas; no pyplot state, no display needed):

* ``<scenario>-asr-vs-utility.png``: ASR against clean utility (CACC), one labelled point per defense at its
  mean over seeds, with error bars of one sample standard deviation on both axes. Bottom right is best.
* ``<scenario>-asr-before-after.png``: ASR without a defense (the attack run) beside ASR after each defense,
  bars at the mean with the same error bars and their values written on top.

Rows without a value (a cell that did not finish, the encoder's attack run that has no classifier yet) are
left out and the plot says so. Every file is written atomically.
"""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from defuse.bench.results import plot_files
from defuse.bench.spec import NO_DEFENSE
from defuse.fileio import write_bytes_atomic
from defuse.scenarios import get_scenario

MARKERS = "osD^vP*Xhp<>"
DPI = 110


def _pct(stat: dict | None) -> tuple[float | None, float]:
    if not stat or stat["mean"] is None:
        return None, 0.0
    return 100 * stat["mean"], 100 * (stat["stdev"] or 0.0)


def _label(agg: dict) -> str:
    return "no defense" if agg["defense"] == NO_DEFENSE else agg["defense"]


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def scatter_png(scenario: str, kind: str, aggs: list[dict], n_seeds: int) -> bytes:
    """The ASR-vs-utility scatter of one scenario, as PNG bytes."""
    fig = Figure(figsize=(7.5, 5.5), layout="constrained")
    ax = fig.add_subplot()
    left_out, placed = [], []
    for i, agg in enumerate(aggs):
        (x, xerr), (y, yerr) = _pct(agg["metrics"].get("cacc")), _pct(agg["metrics"].get("asr"))
        if x is None or y is None:
            left_out.append(_label(agg))
            continue
        size = max(11 - 1.5 * len(placed), 5)  # later points smaller, so coinciding ones stay visible
        ax.errorbar(
            x,
            y,
            xerr=xerr,
            yerr=yerr,
            fmt=MARKERS[i % len(MARKERS)],
            color=f"C{i % 10}",
            markersize=size,
            capsize=4,
            alpha=0.85,
            label=f"{_label(agg)} ({x:.0f}%, {y:.0f}%)",
        )
        near = sum(abs(x - px) < 8 and abs(y - py) < 5 for px, py in placed)  # stack labels of close points
        placed.append((x, y))
        ax.annotate(
            _label(agg),
            (x, y),
            textcoords="offset points",
            xytext=(9, 5 - 12 * near),
            fontsize=9,
            color=f"C{i % 10}",
        )
    ax.set_xlim(-5, 108)
    ax.set_ylim(-5, 108)
    ax.set_xlabel(get_scenario(kind).utility_label)
    ax.set_ylabel(get_scenario(kind).asr_label)
    ax.grid(True, alpha=0.3)
    ax.set_title(
        f"{scenario}: attack success vs clean utility\nmean ± sd over {n_seeds} seed(s); "
        "bottom right is best",
        fontsize=11,
    )
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=9, title="defense (CACC, ASR)", title_fontsize=9)
    if left_out:
        ax.text(0.01, 0.01, "no value: " + ", ".join(left_out), transform=ax.transAxes, fontsize=8, alpha=0.7)
    return _png(fig)


def bars_png(scenario: str, kind: str, aggs: list[dict], n_seeds: int) -> bytes:
    """The ASR before/after bars of one scenario, as PNG bytes."""
    before = next((a for a in aggs if a["defense"] == NO_DEFENSE), None)
    b_mean, b_err = _pct(before["metrics"].get("asr")) if before else (None, 0.0)
    defenses = [a for a in aggs if a["defense"] != NO_DEFENSE]
    fig = Figure(figsize=(max(6.0, 1.3 * len(defenses) + 3), 5.0), layout="constrained")
    ax = fig.add_subplot()
    width = 0.38
    for i, agg in enumerate(defenses):
        a_mean, a_err = _pct(agg["metrics"].get("asr"))
        bars = []
        if b_mean is not None:
            bars.append((i - width / 2, b_mean, b_err, "C3", "before (no defense)"))
        if a_mean is not None:
            bars.append(
                (i + width / 2 if b_mean is not None else i, a_mean, a_err, "C0", "after the defense")
            )
        for x, h, err, colour, legend in bars:
            ax.bar(x, h, width, yerr=err, capsize=4, color=colour, label=legend if i == 0 else None)
            ax.annotate(
                f"{h:.0f}", (x, h + err), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=9
            )
    ax.set_xticks(range(len(defenses)), [_label(a) for a in defenses])
    ax.set_ylim(0, 124)  # room above 100% for the values and the legend
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel(get_scenario(kind).asr_label)
    ax.set_xlabel("defense")
    ax.grid(True, axis="y", alpha=0.3)
    note = "" if b_mean is not None else "\n(the attack run has no ASR of its own; after-defense bars only)"
    ax.set_title(
        f"{scenario}: ASR before and after each defense\nmean ± sd over {n_seeds} seed(s){note}", fontsize=11
    )
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper center", ncols=2, fontsize=9)
    if not defenses:
        ax.text(0.5, 0.5, "no defenses in this scenario", transform=ax.transAxes, ha="center")
    return _png(fig)


def write_plots(results: dict, out: str | Path) -> list[str]:
    """Write both plots of every scenario under ``out``; returns their paths relative to ``out``."""
    out = Path(out)
    written = []
    n_seeds = len(results["bench"]["seeds"])
    for scenario in results["bench"]["scenarios"]:
        name, kind = scenario["name"], scenario["scenario"]
        aggs = [a for a in results["aggregates"] if a["scenario"] == name]
        files = plot_files(name)
        write_bytes_atomic(out / files["scatter"], scatter_png(name, kind, aggs, n_seeds))
        write_bytes_atomic(out / files["bars"], bars_png(name, kind, aggs, n_seeds))
        written += [files["scatter"], files["bars"]]
    return written
