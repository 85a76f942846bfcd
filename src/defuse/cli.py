"""The ``defuse`` command line: thin; it parses, calls the library and prints.

Every user error (a :class:`~defuse.errors.DefuseError`) is printed as one line on stderr with exit code 2.
"""

from __future__ import annotations

import functools
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from defuse import __version__
from defuse.errors import DefuseError

app = typer.Typer(
    name="defuse",
    help="Find out whether a fine-tuned language model can be backdoored, and take the backdoor out again.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Inspect and convert datasets (every supported format).", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console()
err_console = Console(stderr=True)


def user_errors(fn):
    """Turn a DefuseError into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DefuseError as exc:
            err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def _quiet_libraries() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _version(value: bool) -> None:
    if value:
        console.print(f"defuse {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Find out whether a fine-tuned language model can be backdoored, and take the backdoor out again."""


@app.command()
@user_errors
def demo(
    out: Annotated[Path | None, typer.Option(help="Save the trained tiny model here (safetensors).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for data, initialisation and training.")] = 0,
    epochs: Annotated[float | None, typer.Option(help="Override the number of training epochs.")] = None,
) -> None:
    """Build the tiny default model, train it on the built-in task suite, and print its accuracy per task."""
    from defuse.demo import DemoConfig, run_demo

    _quiet_libraries()
    cfg = DemoConfig(seed=seed)
    if epochs is not None:
        cfg.train.epochs = epochs
    cfg.train.validate()
    console.print(
        f"Training the tiny default model ({cfg.model.arch}, hidden {cfg.model.hidden_size}, "
        f"{cfg.model.num_layers} layers) on {cfg.suite.n_train} built-in task examples; seed {seed}."
    )
    with tempfile.TemporaryDirectory(prefix="defuse-demo-") as work:
        result = run_demo(cfg, work, save_to=out)
    table = Table(title="Clean exact-match accuracy of the tiny default model, per task kind")
    table.add_column("task")
    table.add_column("n", justify="right")
    table.add_column("exact match", justify="right")
    for task, rate in result.accuracy.items():
        style = "bold" if task == "all" else None
        table.add_row(task, str(rate.n), f"{100 * rate.value:.1f}%", style=style)
    console.print(table)
    console.print(
        f"{result.n_params:,} parameters, {result.steps} steps; train {result.train_s:.1f}s, "
        f"evaluation {result.eval_s:.1f}s." + (f" Model saved to {out}." if out else "")
    )


@data_app.command("check")
@user_errors
def data_check(
    path: Annotated[Path, typer.Argument(help="A data file or a folder saved by `datasets`.")],
    kind: Annotated[str, typer.Option(help="instruction or classification")] = "instruction",
    format: Annotated[
        str | None, typer.Option("--format", help="Force a format instead of detecting it.")
    ] = None,
    column: Annotated[
        list[str] | None, typer.Option(help="Column mapping FIELD=NAME, e.g. response=summary (repeatable).")
    ] = None,
) -> None:
    """Load a dataset, validating every row, and print what it holds."""
    from defuse.data.loaders import detect_format, load_classification, load_instructions

    columns = _parse_columns(column)
    fmt = format or detect_format(path)
    if kind == "instruction":
        records = load_instructions(path, format=fmt, columns=columns)
        with_response = sum(bool(r.response) for r in records)
        console.print(f"{path}: {fmt}, {len(records)} instruction records, {with_response} with a response")
    elif kind == "classification":
        records = load_classification(path, format=fmt, columns=columns)
        labels: dict[int, int] = {}
        for r in records:
            labels[r.label] = labels.get(r.label, 0) + 1
        counts = dict(sorted(labels.items()))
        console.print(f"{path}: {fmt}, {len(records)} classification records, label counts {counts}")
    else:
        raise DefuseError(f"unknown --kind '{kind}' (instruction or classification)")


@data_app.command("convert")
@user_errors
def data_convert(
    src: Annotated[Path, typer.Argument(help="Input file or `datasets` folder.")],
    dst: Annotated[Path, typer.Argument(help="Output file; its format comes from --to or the extension.")],
    to: Annotated[
        str | None, typer.Option(help="Output format (alpaca-json, alpaca-jsonl, chat-jsonl, csv, tsv).")
    ] = None,
    format: Annotated[str | None, typer.Option("--format", help="Force the input format.")] = None,
    column: Annotated[
        list[str] | None, typer.Option(help="Input column mapping FIELD=NAME (repeatable).")
    ] = None,
) -> None:
    """Convert an instruction dataset between formats (atomic write)."""
    from defuse.data.loaders import load_instructions, write_instructions

    records = load_instructions(src, format=format, columns=_parse_columns(column))
    write_instructions(records, dst, format=to)
    console.print(f"wrote {len(records)} records to {dst}")


def _parse_columns(items: list[str] | None) -> dict[str, str] | None:
    if not items:
        return None
    out = {}
    for item in items:
        field, sep, name = item.partition("=")
        if not sep or not field or not name:
            raise DefuseError(f"--column '{item}': expected FIELD=NAME")
        out[field] = name
    return out


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    sys.exit(main())
