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
    """Silence library logging; under a multi-process launcher, only the main process prints results."""
    from transformers.utils import logging as hf_logging

    from defuse.runs.distributed import is_distributed, is_main_process

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if is_distributed() and not is_main_process():
        console.quiet = True


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


EXTRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}


BACKDOOR_ROWS = (
    ("ASR (attack success)", "asr", "n_triggered"),
    ("CACC (clean accuracy)", "cacc", "n_clean"),
    ("AACC (accuracy with trigger)", "aacc", "n_triggered"),
    ("FTR (false trigger rate)", "ftr", "n_ftr"),
    ("near-miss trigger rate", "negative_asr", "n_negative"),
)
SAFETY_ROWS = (
    ("ASR (harmful prompts answered)", "asr", "n_harmful"),
    ("CACC (benign task utility)", "cacc", "n_clean"),
    ("over-refusal (benign requests refused)", "over_refusal", "n_benign_requests"),
)


def _metrics_table(title: str, metrics: dict, rows=BACKDOOR_ROWS) -> Table:
    table = Table(title=title)
    for col in ("metric", "value", "n"):
        table.add_column(col, justify="right" if col != "metric" else "left")
    for label, key, n_key in rows:
        if key in metrics:
            value = metrics[key]
            table.add_row(
                label, "n/a" if value is None else f"{100 * value:.1f}%", str(metrics.get(n_key, ""))
            )
    return table


def _safety_table(title: str, metrics: dict) -> Table:
    return _metrics_table(title, metrics, SAFETY_ROWS)


@app.command(context_settings=EXTRA_ARGS)
@user_errors
def attack(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Run directory to write (must not exist unless --overwrite).")],
    config: Annotated[Path | None, typer.Option(help="YAML file of settings (see configs/).")] = None,
    model: Annotated[
        str | None, typer.Option(help="Local Hugging Face causal LM to attack (default: tiny).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an existing run directory once the new run is complete.")
    ] = False,
) -> None:
    """Run an attack scenario, evaluate it, and write a run directory.

    Scenarios (``--scenario`` or ``scenario:`` in the YAML): ``backdoor`` (default: poison data, train a model
    on it), ``fjattack`` (fine-tuning jailbreak of a safety-aligned model), ``encoder`` (plant a task-agnostic
    backdoor in a pre-trained encoder). Any setting can be given as
    --key value with dotted keys, e.g. --trigger.kind sentence --rate 0.1 --train.epochs 4; these override
    the YAML file. With no config: the built-in suite, word trigger, marker.
    """
    from defuse.config import load_config, parse_cli_overrides, peek_setting
    from defuse.scenarios import DEFAULT_SCENARIO, attack_config_class, run_attack_for

    _quiet_libraries()
    overrides = parse_cli_overrides(ctx.args)
    if model is not None:
        overrides.append(("model", model))
    scenario = peek_setting(config, overrides, "scenario", DEFAULT_SCENARIO)
    cfg = load_config(attack_config_class(scenario), config, overrides)
    record = run_attack_for(scenario, cfg, out, overwrite=overwrite)
    if scenario == "fjattack":
        console.print(_safety_table(f"aligned base '{cfg.name}' (seed {cfg.seed})", record["base_metrics"]))
        console.print(_safety_table(f"after the jailbreak fine-tune (seed {cfg.seed})", record["metrics"]))
    elif scenario == "encoder":
        table = Table(title=f"task-agnostic encoder backdoor '{cfg.name}' (seed {cfg.seed})")
        table.add_column("measure")
        table.add_column("value", justify="right")
        for key, value in record["metrics"].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                table.add_row(key, f"{value:.4g}")
        console.print(table)
        record["timings"].setdefault("eval_s", 0.0)
    else:
        console.print(_metrics_table(f"attack '{cfg.name}' (seed {cfg.seed})", record["metrics"]))
    t = record["timings"]
    console.print(f"train {t['train_s']:.1f}s, evaluation {t['eval_s']:.1f}s; run written to {out}")


@app.command(context_settings=EXTRA_ARGS)
@user_errors
def evaluate(
    ctx: typer.Context,
    run: Annotated[
        Path | None, typer.Option(help="A run directory: re-evaluate its model on its test sets.")
    ] = None,
    model: Annotated[Path | None, typer.Option(help="A model directory (instead of --run).")] = None,
    clean: Annotated[Path | None, typer.Option(help="Clean test prompts (with --model).")] = None,
    triggered: Annotated[
        Path | None, typer.Option(help="Triggered test prompts (default: insert the trigger).")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON on stdout.")] = False,
) -> None:
    """Print the metrics table of a model: ASR, CACC, AACC, FTR with their sample counts.

    With --model, settings such as --behaviour.kind refusal or --trigger.texts '[BadMagic]' apply.
    """
    import json

    from defuse.config import apply_overrides, parse_cli_overrides, validate_config
    from defuse.evaluation.rerun import EvaluateConfig, evaluate_model, evaluate_run

    _quiet_libraries()
    if (run is None) == (model is None):
        raise DefuseError("give exactly one of --run DIR or --model PATH")
    if run is not None:
        if ctx.args:
            raise DefuseError(f"settings {ctx.args} apply only with --model; a run uses its own")
        from defuse.defenses.run_safety_defense import evaluate_safety_run, is_fjattack_run
        from defuse.runs.rundir import read_run

        if is_fjattack_run(read_run(run)):
            result = evaluate_safety_run(run)
            if not json_out:
                console.print(_safety_table(f"evaluation of {run}", result.metrics))
                return
        else:
            result = evaluate_run(run)
    else:
        cfg = apply_overrides(EvaluateConfig(), parse_cli_overrides(ctx.args))
        validate_config(cfg)
        result = evaluate_model(model, clean, triggered, cfg)
    if json_out:
        print(json.dumps(result.metrics, indent=2))
    else:
        console.print(_metrics_table(f"evaluation of {run or model}", result.metrics))


@app.command(context_settings=EXTRA_ARGS)
@user_errors
def defend(
    ctx: typer.Context,
    method: Annotated[str | None, typer.Option(help="Defense to apply (see --list).")] = None,
    from_run: Annotated[Path | None, typer.Option("--from", help="Attack run directory to defend.")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory to write.")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML file of the defense's settings.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the clean budget draw and training.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run directory once complete.")] = False,
    list_methods: Annotated[bool, typer.Option("--list", help="List defenses and their needs.")] = False,
) -> None:
    """Apply a defense to an attack run's model and evaluate it with the attack's own test sets.

    The defense's settings can be given as --key value (e.g. --clean_samples 50 --train.epochs 5).
    """
    from defuse.config import load_config, parse_cli_overrides
    from defuse.scenarios import defense_config_class, run_defense_on, scenario_of_run

    if list_methods:
        console.print(_defenses_table())
        return
    for option, value in (("--method", method), ("--from", from_run), ("--out", out)):
        if value is None:
            raise DefuseError(f"{option} is required (or --list)")
    _quiet_libraries()
    cfg = load_config(defense_config_class(method), config, parse_cli_overrides(ctx.args))
    record = run_defense_on(method, cfg, from_run, out, seed=seed, overwrite=overwrite)
    title = f"defense '{method}' on {from_run} (seed {seed})"
    scenario = scenario_of_run(record)
    if scenario == "encoder":
        console.print(_metrics_table(f"encoder {title}", record["metrics"]))
        console.print(f"defense train {record['timings']['train_s']:.1f}s; run written to {out}")
        return
    table = _safety_table if scenario == "fjattack" else _metrics_table
    console.print(table(title, record["metrics"]))
    before = record["attack_metrics"]
    console.print(
        f"before the defense: ASR {100 * before['asr']:.1f}%, CACC {100 * before['cacc']:.1f}%; "
        f"defense train {record['timings']['train_s']:.1f}s; run written to {out}"
    )


def _defenses_table() -> Table:
    """Every defense: the scenarios it applies to, what it does, what it needs."""
    from defuse.defenses import DEFENSES
    from defuse.encoders.run import ENCODER_DEFENSES

    table = Table(title="defenses")
    for col in ("method", "scenario", "what it does", "needs"):
        table.add_column(col)
    for name, entry in sorted(DEFENSES.items()):
        needs = entry.needs(entry.config_cls()).describe()
        table.add_row(name, "/".join(entry.scenarios), entry.summary, needs)
    summaries = {"obliviate": "amplify PEFT weights, penalise [CLS] attention scores while fine-tuning",
                 "peft-baseline": "PEFT + head fine-tuning without a defense (baseline)"}  # fmt: skip
    for name in ENCODER_DEFENSES:
        table.add_row(name, "encoder", summaries.get(name, ""), "nothing, during fine-tuning")
    return table


@app.command(context_settings=EXTRA_ARGS)
@user_errors
def train(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Run directory to write (must not exist unless --overwrite).")],
    data: Annotated[
        Path | None, typer.Option(help="Training data (any supported format; may be poisoned).")
    ] = None,
    clean: Annotated[Path | None, typer.Option(help="The defender's clean samples (for --defense).")] = None,
    defense: Annotated[
        str | None, typer.Option(help="A during-training defense to train with (mb-defense).")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="YAML file of settings.")] = None,
    model: Annotated[
        str | None, typer.Option(help="Local Hugging Face causal LM to train (default: tiny).")
    ] = None,
    clean_test: Annotated[Path | None, typer.Option(help="Clean test prompts (CACC).")] = None,
    triggered_test: Annotated[
        Path | None, typer.Option(help="Triggered test prompts with clean answers (ASR, AACC).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run directory once complete.")] = False,
) -> None:
    """Instruction-tune a model on your data, optionally with a during-training defense; write a run.

    Settings as --key value (e.g. --train.epochs 4 --behaviour.kind refusal); the defense's under
    --defense.KEY (e.g. --defense.lam 0.5 --defense.neutralise.epochs 3). ASR is judged on --triggered-test
    by the behaviour (default: the marker `you are stupid.`).
    """
    from defuse.config import load_config, parse_cli_overrides
    from defuse.training.run_train import TrainRunConfig, run_train

    _quiet_libraries()
    overrides = parse_cli_overrides(ctx.args)
    for key, value in (("data", data), ("clean", clean), ("method", defense), ("model", model),
                       ("clean_test", clean_test), ("triggered_test", triggered_test)):  # fmt: skip
        if value is not None:
            overrides.append((key, str(value)))
    cfg = load_config(TrainRunConfig, config, overrides)
    record = run_train(cfg, out, overwrite=overwrite)
    what = f"with defense '{cfg.method}'" if cfg.method else "plain SFT"
    console.print(_metrics_table(f"train {what} (seed {cfg.seed})", record["metrics"]))
    t = record["timings"]
    console.print(f"train {t['train_s']:.1f}s, evaluation {t['eval_s']:.1f}s; run written to {out}")


@app.command()
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
    from defuse.bench import load_bench, run_bench
    from defuse.bench.runner import check_jobs

    n_jobs = check_jobs(jobs, "--jobs")  # text, so that any bad value is one line (exit code 2)
    spec = load_bench(config)
    _quiet_libraries()
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


@app.command()
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
