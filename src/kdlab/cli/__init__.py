"""The ``kdlab`` command: a thin layer over the Python API.

Each command loads its input, calls one API function and prints where the results are. User
mistakes (:class:`~kdlab.errors.KdlabError`) print one line and exit with status 2.
"""

from __future__ import annotations

import shlex
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from kdlab.errors import KdlabError

ARM_HELP = "teacher | scratch | distilled | a compared method in a seed folder (kd, dist, …)"
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="kdlab: train a teacher, a student from scratch and a distilled student, and compare them.",
)
# Pipes and logs get a fixed, roomy width (rich would assume 80 columns and squeeze the table).
console = Console() if Console().is_terminal else Console(width=120)
err_console = Console(stderr=True) if Console(stderr=True).is_terminal else Console(stderr=True, width=160)

ExperimentArg = Annotated[
    Optional[str],  # noqa: UP045 - typer needs Optional on Python 3.10
    typer.Argument(help="preset name (`kdlab presets`) or experiment .yaml; default: digits"),
]
SetOption = Annotated[
    Optional[list[str]],  # noqa: UP045 - typer needs Optional on Python 3.10
    typer.Option("--set", "-s", help="override a config key, e.g. --set distill.alpha=0.5 (repeatable)"),
]


@app.command()
def run(
    experiment: ExperimentArg = None,
    set_: SetOption = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="parent folder of the run folder")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")] = False,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="continue an interrupted run folder from its last complete epoch")
    ] = None,
) -> None:
    """Train and compare teacher, scratch student and distilled student; write a run folder."""
    from kdlab.config import load_experiment
    from kdlab.errors import RunInterrupted
    from kdlab.lab.recovery import StopOnSignal, resume_command
    from kdlab.lab.resume import resume_lab
    from kdlab.lab.run import run_lab
    from kdlab.report.table import print_results
    from kdlab.runs import read_results
    from kdlab.train.distributed import launch_rank
    from kdlab.train.progress import RichProgress

    if resume is not None and (experiment is not None or set_ or out is not None):
        raise KdlabError("--resume continues a run with its saved config: give no experiment, --set or --out")
    cfg = None if resume is not None else load_experiment(experiment, set_ or [])
    progress = None if quiet else (lambda arm: RichProgress(arm, err_console))
    log = None if quiet else lambda m: err_console.print(m)
    with StopOnSignal() as stop:
        try:
            if resume is not None:
                run_dir = resume_lab(resume, progress=progress, log=log, stop=stop)
            else:
                assert cfg is not None
                run_dir = run_lab(cfg, out=out, progress=progress, log=log, stop=stop)
        except RunInterrupted as e:
            folder = Path(str(e.run_dir if e.run_dir is not None else resume))
            raise _interrupted(stop, resume_command(folder), "run") from None
    if launch_rank() != 0:  # under torchrun only rank 0 reports (and only it wrote a run folder)
        return
    print_results(read_results(run_dir), console, run_dir)
    _write_report_safely(run_dir)
    console.print(f"run folder: {run_dir}")


@app.command()
def show(
    run_dir: Annotated[Path, typer.Argument(help="a run folder (`kdlab run`) or comparison folder (`kdlab compare`)")],
) -> None:
    """Re-print a run's results table, or a comparison's table across seeds."""
    from kdlab.runs import has_results, is_comparison

    if is_comparison(run_dir) and not has_results(run_dir):
        from kdlab.report.compare_table import print_comparison
        from kdlab.runs import read_comparison

        print_comparison(read_comparison(run_dir), console, folder=run_dir)
        return
    from kdlab.report.table import print_results
    from kdlab.runs import read_results

    print_results(read_results(run_dir), console, run_dir)


@app.command()
def predict(
    run_dir: Annotated[Path, typer.Argument(help="a run folder, or an .onnx file from `kdlab export`")],
    inputs: Annotated[
        list[str],
        typer.Argument(help="texts, text files (one text per line) or - for stdin; image files for image runs"),
    ],
    arm: Annotated[str, typer.Option("--arm", help=ARM_HELP)] = "distilled",
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON list instead of lines")] = False,
) -> None:
    """Classify new inputs with a finished run's model: class and probability per input.

    RUN_DIR may also be an ONNX file written by `kdlab export` (a path ending in .onnx): it carries
    its classes and preprocessing, so no run folder is needed (--arm is then the file's own).
    """
    from kdlab.apps.predict import expand_inputs, load_onnx, load_run, print_predictions

    if run_dir.suffix.lower() == ".onnx":
        onnx_model = load_onnx(run_dir)
        print_predictions(onnx_model.predict(expand_inputs(onnx_model, inputs)), as_json=as_json)
        return
    from kdlab.lab.compare import refuse_comparison_folder

    refuse_comparison_folder(run_dir, "predict", inputs, arm=arm, after=["--json"] if as_json else [])
    run = load_run(run_dir, arms=[arm])
    print_predictions(run.predict(expand_inputs(run, inputs), arm=arm), as_json=as_json)


@app.command()
def presets() -> None:
    """List the built-in experiment presets."""
    from kdlab.config import list_presets

    for name, description in list_presets().items():
        console.print(f"[bold]{name:<14}[/bold] {description}")


@app.command()
def models() -> None:
    """List the registered models (name, kind, parameters, description) and the other model specs."""
    from kdlab.models.registry import print_models

    print_models(console)


@app.command()
def compare(
    experiment: ExperimentArg = None,
    methods: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--methods",
            "-m",
            help="comma-separated distill methods, e.g. kd,dkd or kd:temperature=8 (default kd; "
            "with --resume: the recorded ones, plus any new given here)",
        ),
    ] = None,
    seeds: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(
            "--seeds",
            "-n",
            help="number of seeds: the config's seed and the next (default 3; with --resume: the recorded ones)",
        ),
    ] = None,
    set_: SetOption = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="parent folder of the comparison folder")] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume", help="continue this comparison folder with its recorded settings; finished cells are skipped"
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")] = False,
) -> None:
    """Compare scratch and distilled students over several seeds, with 95% intervals and paired tests."""
    from kdlab.config import load_experiment
    from kdlab.errors import RunInterrupted
    from kdlab.lab.compare import read_comparison, resume_comparison, run_comparison
    from kdlab.lab.recovery import StopOnSignal
    from kdlab.report.compare_table import print_comparison
    from kdlab.runs import is_comparison
    from kdlab.train.progress import RichProgress

    if resume is None and out is not None and is_comparison(out):
        resume = out  # --out naming a comparison folder resumes it, as the API does
    # Resuming with no experiment and no --set: the experiment, seeds and methods recorded in the folder.
    cfg = None if resume is not None and experiment is None and not set_ else load_experiment(experiment, set_ or [])
    progress = None if quiet else (lambda arm: RichProgress(arm, err_console))
    log = None if quiet else lambda m: err_console.print(m, markup=False)
    with StopOnSignal() as stop:
        try:
            if cfg is None:
                assert resume is not None
                comp_dir = resume_comparison(
                    resume, methods=methods, seeds=seeds, progress=progress, log=log, stop=stop
                )
            else:
                comp_dir = run_comparison(
                    cfg, methods, seeds, out=out, resume=resume, progress=progress, log=log, stop=stop
                )
        except RunInterrupted as e:
            # The folder records the experiment, seeds and methods: --resume alone resumes all of them.
            folder = Path(str(e.run_dir)).parent if e.run_dir is not None else resume
            line = None if folder is None else f"kdlab compare --resume {shlex.quote(str(folder))}"
            raise _interrupted(stop, line, "comparison") from None
    print_comparison(read_comparison(comp_dir), console)
    _write_report_safely(comp_dir)
    console.print(f"comparison folder: {comp_dir}")


@app.command()
def tune(
    experiment: ExperimentArg = None,
    trials: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(
            "--trials",
            "-t",
            help="finished trials (complete + pruned) the study must hold; with --resume: default the recorded number",
        ),
    ] = None,
    timeout: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option("--timeout", help="start no new trial after this many seconds, then compare the best so far"),
    ] = None,
    methods: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--methods", "-m", help="comma-separated methods to search over (default kd,dkd,dist)"),
    ] = None,
    seeds: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option("--seeds", "-n", help="seeds of the final comparison of the best setting vs scratch (default 3)"),
    ] = None,
    set_: SetOption = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="parent folder of the tune folder")] = None,
    resume: Annotated[
        Path | None,
        typer.Option("--resume", help="continue this tune folder: finished trials are kept, never re-run"),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars, no comparison table")] = False,
) -> None:
    """Search distillation settings with Optuna on validation accuracy, then compare the best
    against scratch over several seeds; writes best.yaml, trials.csv, the study and the comparison."""
    from kdlab.config import load_experiment
    from kdlab.errors import RunInterrupted
    from kdlab.lab.recovery import StopOnSignal
    from kdlab.lab.tune import BEST_FILE, read_tune, run_tune
    from kdlab.report.compare_table import print_comparison
    from kdlab.runs import read_comparison
    from kdlab.train.progress import RichProgress

    if resume is not None and (experiment is not None or set_ or out is not None):
        raise KdlabError("--resume continues a search with its saved config: give no experiment, --set or --out")
    if resume is not None:
        read_tune(resume)  # not a tune folder: one line before anything else
    cfg = None if resume is not None else load_experiment(experiment, set_ or [])
    progress = None if quiet else (lambda arm: RichProgress(arm, err_console))
    log = None if quiet else lambda m: err_console.print(m, markup=False, highlight=False)
    with StopOnSignal() as stop:
        try:
            tune_dir = run_tune(
                cfg,
                trials=trials,
                timeout=timeout,
                methods=methods,
                seeds=seeds,
                out=out,
                resume=resume,
                progress=progress,
                log=log,
                stop=stop,
            )
        except RunInterrupted as e:  # the study keeps every finished trial
            line = None if e.run_dir is None else f"kdlab tune --resume {shlex.quote(str(e.run_dir))}"
            raise _interrupted(stop, line, "tune") from None
    record = read_tune(tune_dir)
    comp_dir = tune_dir / record["comparison"]["folder"]
    best = record["best"]
    if not quiet:
        print_comparison(read_comparison(comp_dir), console, folder=comp_dir)
    elif record.get("verdict"):
        console.print(record["verdict"]["sentence"], markup=False, highlight=False, soft_wrap=True)
    console.print(
        f"best setting: trial {best['number']}, {best['arm']} (validation accuracy {100 * best['value']:.2f}%), "
        f"in {tune_dir / BEST_FILE}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    console.print(f"tune folder: {tune_dir}", markup=False, highlight=False, soft_wrap=True)


def _interrupted(stop: Any, resume_line: str | None, folder_kind: str) -> typer.Exit:
    """What a command stopped by a signal prints — how to resume, or that its ``folder_kind`` folder was
    never written — and the exit to raise (128 + the signal, as a shell reports it)."""
    from kdlab.lab.recovery import SIGNAL_EXIT

    if resume_line is None:
        err_console.print(f"interrupted before the {folder_kind} folder was written; nothing to resume")
    else:
        err_console.print(f"interrupted; resume with: {resume_line}", markup=False, highlight=False)
    return typer.Exit(SIGNAL_EXIT.get(stop.signum or signal.SIGINT, 130))


@app.command()
def report(
    folder: Annotated[Path, typer.Argument(help="a run folder (`kdlab run`) or comparison folder (`kdlab compare`)")],
) -> None:
    """Write a self-contained report.html (tables, curves, trade-offs, confusion matrices) in FOLDER."""
    from kdlab.report.render import write_report

    console.print(f"report: {write_report(folder)}")


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="a run folder, or a comparison's seed-<s> folder")],
    format_: Annotated[
        str, typer.Option("--format", "-f", help="onnx, or hf (a save_pretrained folder of an hf: model)")
    ] = "onnx",
    arm: Annotated[str, typer.Option("--arm", help=ARM_HELP)] = "distilled",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="default RUN_DIR/export/ARM.onnx (hf: RUN_DIR/export/ARM-hf)")
    ] = None,
) -> None:
    """Export a trained network to ONNX (checked against PyTorch with onnxruntime), or an hf: model
    as a Hugging Face save_pretrained folder with its tokenizer or image processor (checked against
    kdlab after from_pretrained)."""
    from kdlab.apps.export import FORMATS
    from kdlab.errors import ConfigError

    if format_ not in FORMATS:
        raise ConfigError(f"--format: unknown export format '{format_}' (known: {', '.join(FORMATS)})")
    from kdlab.lab.compare import refuse_comparison_folder

    after = (["--format", format_] if format_ != "onnx" else []) + (["--out", str(out)] if out is not None else [])
    refuse_comparison_folder(run_dir, "export", arm=arm, after=after)
    if format_ == "hf":
        from kdlab.apps.export import HF_PARITY_ATOL, export_hf

        hf = export_hf(run_dir, arm=arm, out=out)
        diff = f"max |from_pretrained - kdlab| = {hf.max_abs_diff:.2e} <= {HF_PARITY_ATOL:g}"
        console.print(f"exported {hf.arm}: {hf.path} (model + {hf.preprocessing}; {diff})")
        return
    from kdlab.apps.export import PARITY_ATOL, export_onnx

    result = export_onnx(run_dir, arm=arm, out=out)
    diff = f"max |onnx - torch| = {result.max_abs_diff:.2e} <= {PARITY_ATOL:g}"
    console.print(f"exported {result.arm}: {result.path} ({diff})")


def _write_report_safely(folder: Path) -> None:
    """Write report.html after a run; a failure is reported but never loses the recorded results."""
    from kdlab.errors import StorageError
    from kdlab.report.render import write_report

    try:
        write_report(folder)
    except OSError as e:  # a full disk (StorageError is one): the results are recorded, the report is not
        raise StorageError(
            f"{e}; report.html not written (the results are recorded): run `kdlab report {folder}` once there is space"
        ) from None
    except Exception as e:  # the results are already on disk: say what failed and carry on
        err_console.print(
            f"warning: report.html not written ({type(e).__name__}: {e}); retry with `kdlab report {folder}`",
            markup=False,
            soft_wrap=True,
        )


def main() -> None:
    """Console-script entry point: KdlabError -> one line on stderr, exit status 2."""
    try:
        code = app(standalone_mode=False)  # returns a typer.Exit's code instead of raising it
        if isinstance(code, int) and code:
            sys.exit(code)
    except KdlabError as e:
        err_console.print(f"error: {e}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted", markup=False)
        sys.exit(130)
    except Exception as e:
        if _is_usage_error(e):  # typer/click's own errors: short usage message, exit 2
            e.show()  # type: ignore[attr-defined]
            sys.exit(e.exit_code)  # type: ignore[attr-defined]
        raise


def _is_usage_error(e: BaseException) -> bool:
    """True for click's ``ClickException`` family (usage errors, bad option values, missing args).

    Recognised by its interface, not its class: typer releases differ in whether they use the
    ``click`` package or a copy of it inside typer, so importing ``click`` here would break on some.
    """
    return any(c.__name__ == "ClickException" for c in type(e).__mro__) and callable(getattr(e, "show", None))
