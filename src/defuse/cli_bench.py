"""``defuse bench`` and ``defuse report``: run a benchmark grid and rebuild its report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from defuse.cli_common import console, err_console, quiet_libraries, user_errors


@user_errors
def bench(
    config: Annotated[
        Path, typer.Argument(help="Bench YAML: scenarios, defenses, seeds (configs/demo.yaml).")
    ],
    out: Annotated[
        Path, typer.Option(help="Output folder (new, or an earlier bench's: its cells are reused).")
    ],
    jobs: Annotated[
        str,
        typer.Option(
            metavar="N",
            help="Cells to run at once, each in a worker process (a defense after its attack); "
            "1: one after another in this process. Same N on the same machine, same numbers.",
        ),
    ] = "1",
) -> None:
    """Run a grid of attack scenarios x defenses x seeds and report it (results.json, results.md, plots).

    Every setting is checked before any training. Each cell (an attack or a defense run of one seed) is a run
    directory under OUT/runs named by a hash of its settings and inputs: a finished cell is reused, an
    interrupted one resumes, a changed setting reruns only what depends on it. With --jobs N, up to N
    independent cells run at once. Exit code 1 when some cells failed (the report is still written; logs
    under OUT/logs).
    """
    if jobs.strip().isdigit() and int(jobs) > 1:  # the workers' server imports while this process does
        from defuse.bench.workers import start_worker_server

        start_worker_server()
    from defuse.bench import load_bench, run_bench
    from defuse.bench.runner import check_jobs

    n_jobs = check_jobs(jobs, "--jobs")  # text, so that any bad value is one line (exit code 2)
    spec = load_bench(config)
    quiet_libraries()
    outcome = run_bench(spec, out, stream=sys.stdout, jobs=n_jobs)
    _print_report(outcome.report)
    done = len(outcome.ran) + len(outcome.reused)
    planned = done + len(outcome.failed) + len(outcome.skipped)
    console.print(
        f"{len(outcome.ran)} cells run, {len(outcome.reused)} reused; {done} of {planned} finished."
    )
    if outcome.failed:
        first = next(iter(outcome.failed.values()))
        message = f"error: {len(outcome.failed)} cells failed (first: {first}); logs under {out}/logs"
        err_console.print(message, markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)


@user_errors
def report(
    out: Annotated[Path, typer.Argument(help="A bench output folder (written by `defuse bench`).")],
) -> None:
    """Rebuild a bench's results.json, results.md and plots from its run directories, and print the tables."""
    from defuse.bench import write_report

    _print_report(write_report(out))


def _print_report(rep) -> None:
    """Print the bench tables (rich on a terminal, Markdown elsewhere) and where the report files are."""
    from defuse.bench import scenario_tables
    from defuse.bench.tables import markdown_table

    for t in scenario_tables(rep.results):
        if not console.is_terminal:
            text = f"\n{t.title}\n\n{markdown_table(t)}\n\n{' '.join(t.notes)}\n"
            console.print(text, markup=False, highlight=False, soft_wrap=True)
            continue
        table = Table(title=t.title, caption=" ".join(t.notes), caption_justify="left")
        for i, col in enumerate(t.columns):
            table.add_column(col, justify="left" if i == 0 else "right")
        for row in t.rows:
            table.add_row(*row)
        console.print(table)
    plots = f"{len(rep.plots)} plots in {rep.markdown_path.parent / 'plots'}"
    console.print(
        f"Report: {rep.markdown_path} (tables), {rep.json_path} (every number), {plots}",
        soft_wrap=True,
        highlight=False,
    )
