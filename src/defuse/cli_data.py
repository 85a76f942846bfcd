"""``defuse data``: check and convert datasets (every supported format)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from defuse.cli_common import console, user_errors
from defuse.errors import DefuseError

data_app = typer.Typer(help="Inspect and convert datasets (every supported format).", no_args_is_help=True)


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
    prompts: Annotated[
        bool, typer.Option("--prompts", help="Test prompts: rows may lack a response (not for training).")
    ] = False,
) -> None:
    """Load a dataset, validating every row, and print what it holds.

    Instruction data is checked as training data: every row must have a response (an empty one is
    allowed where the format writes one, and counted); --prompts accepts rows without one.
    """
    from defuse.data.loaders import detect_format, load_classification, load_instructions

    columns = _parse_columns(column)
    fmt = format or detect_format(path)
    if kind == "instruction":
        records = load_instructions(path, format=fmt, columns=columns, prompts_only=prompts)
        empty = sum(not r.response for r in records)
        what = "without a response" if prompts else "with an empty response"
        console.print(
            f"{path}: {fmt}, {len(records)} instruction records, {len(records) - empty} with a response, "
            f"{empty} {what}"
        )
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
