"""The `batchtrain` command: fit, evaluate, predict, download.

Bad input (options, config files, data files, run directories) ends with one line on stderr and
exit status 2, never a traceback. Ctrl-C / SIGTERM during fit finish the step, write a
checkpoint and exit with 130 / 143; a non-finite loss stops training with status 1.
"""
import argparse
import os
import signal
import subprocess
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from batchtrain import __version__
from batchtrain.cli.config import (FIELDS, column_names, convert, path_or_on, read_config_file,
                              resolve_config, resume_config)
from batchtrain.data.builtin import DATASETS, download
from batchtrain.distributed.ddp import exit_process, leave_process_group
from batchtrain.errors import ConfigError, TrainingInterrupted
from batchtrain.models.spec import check_trusted
from batchtrain.trainer import EVAL_BATCH_SIZE
from batchtrain.cli.runner import (CONFIG_FILE, read_run_config, run_evaluate, run_fit, run_predict,
                               run_probe)

EXIT_STOPPED = 1  # training stopped on a non-finite loss (checkpoints written before it are kept)
EXIT_BAD_INPUT = 2
LAUNCHER_FLAGS = ("--nproc", "--max-restarts")  # options of torch.distributed.run, not of training


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (not usage + error) and exit status 2."""

    def error(self, message: str) -> None:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="batchtrain", description="Mini-batch training of PyTorch models.")
    parser.add_argument("--version", action="version", version=f"batchtrain {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    fit = commands.add_parser("fit", help="train a model (default: the reference CNN on Fashion-MNIST)",
                              description="Train a model. With no options: the design document's "
                              "reference job (seed-cnn, Adam, batch 128, 5 epochs, validation 0.2).")
    fit.add_argument("--config", help="YAML, TOML or JSON file of options (flags override it)")
    fit.add_argument("--nproc", type=int, default=1, metavar="N",
                     help="train with N processes on this machine (DistributedDataParallel, "
                          "launched through torch.distributed.run)")
    fit.add_argument("--max-restarts", type=int, default=0, metavar="N",
                     help="restart the processes up to N times when one dies, each time from the "
                          "newest checkpoint (torch.distributed.run's elastic restarts; default 0)")
    fit.add_argument("--resume", type=Path, metavar="RUN_DIR",
                     help="continue the run in RUN_DIR from its newest checkpoint, with its "
                          "options (flags given here override them, e.g. --epochs)")
    _add_trust(fit)
    for name, spec in FIELDS.items():
        flag = "--" + name.replace("_", "-")
        help_text = f"{spec.metadata['help']} (default: {spec.default})"
        if spec.metadata["kind"] is bool:
            fit.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                             help=help_text)
        else:
            choices = spec.metadata["choices"]
            several = spec.metadata["kind"] in (list, column_names)  # --features a b or a,b
            optional = spec.metadata["kind"] is path_or_on  # --tensorboard [DIR]
            fit.add_argument(flag, default=argparse.SUPPRESS, metavar=_metavar(name, choices),
                             nargs="+" if several else "?" if optional else None,
                             const=True if optional else None, help=help_text)
    fit.set_defaults(handler=_fit)

    evaluate = commands.add_parser("evaluate", help="evaluate a run's model on test data")
    evaluate.add_argument("run_dir", type=Path, help="a run directory written by batchtrain fit")
    evaluate.add_argument("--data", help="dataset name or .npz file (default: the run's data)")
    evaluate.add_argument("--data-dir", help="directory holding the dataset's files")
    _add_batch_and_device(evaluate)
    evaluate.set_defaults(handler=_evaluate)

    predict = commands.add_parser("predict", help="predict with a run's model")
    predict.add_argument("run_dir", type=Path, help="a run directory written by batchtrain fit")
    predict.add_argument("--input", type=Path, required=True, help="samples, a .npy file")
    predict.add_argument("--output", type=Path, required=True, help="where to write predictions (.npy)")
    _add_batch_and_device(predict)
    predict.set_defaults(handler=_predict)

    probe = commands.add_parser("probe", help="measure throughput, memory and gradient noise; "
                                "recommend a batch size and learning rate")
    probe.add_argument("--data", default="fashion-mnist", help="dataset name or .npz file")
    probe.add_argument("--data-dir", help="directory holding the dataset's files")
    probe.add_argument("--model", default="seed-cnn", help="seed-cnn, mlp or package.module:factory")
    probe.add_argument("--hidden", help="mlp hidden sizes, e.g. 128,64")
    probe.add_argument("--optimizer", default="adam", choices=("sgd", "adam", "adamw", "rmsprop"))
    probe.add_argument("--lr", type=float, help="learning rate the branches train at (default: the optimizer's)")
    probe.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    probe.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    probe.add_argument("--memory-budget", help="memory for the physical batch (8GiB, 0.5 ...)")
    probe.add_argument("--sizes", default="16,32,64,128,256,512,1024,2048",
                       help="physical batch sizes to time (default 16,...,2048)")
    probe.add_argument("--warmup", type=int, default=6400, help="warm-up samples (default 6400)")
    probe.add_argument("--repeats", type=int, default=5, help="timed steps per size (default 5)")
    probe.add_argument("--output", type=Path, help="report directory (default runs/probe-<time>)")
    probe.set_defaults(handler=_probe)

    fetch = commands.add_parser("download", help="download and verify a built-in dataset")
    fetch.add_argument("name", choices=sorted(DATASETS), help="dataset name")
    fetch.add_argument("--data-dir", help="destination (default: ~/.cache/batchtrain/<name>)")
    fetch.set_defaults(handler=_download)
    return parser


def _metavar(name: str, choices: tuple | None) -> str:
    return "{" + ",".join(choices) + "}" if choices else name.upper()


def _add_batch_and_device(parser: argparse.ArgumentParser) -> None:
    # Not fit's --batch-size (a spec for optimizer steps): the samples of one inference batch,
    # which keeps no activations for backward and so can be large.
    parser.add_argument("--batch-size", type=int, default=EVAL_BATCH_SIZE,
                        help=f"samples per inference batch (default {EVAL_BATCH_SIZE}; no "
                             "gradients are kept, so it can exceed fit's batch size)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--best", action="store_true",
                        help="use the best epoch's model (RUN/best/, kept by fit --save-best) "
                             "instead of the final one")
    parser.add_argument("--model", help="the model to rebuild, when model.json names an import path "
                        "package.module:factory: naming it here trusts it (default: model.json's "
                        "built-in model)")
    _add_trust(parser)


def _add_trust(parser: argparse.ArgumentParser) -> None:
    # Never a config field: config.yaml is a run file, and a run file must not vouch for itself.
    parser.add_argument("--trust-model-code", action="store_true",
                        help="rebuild a model whose run files (model.json, config.yaml) name an "
                             "import path package.module:factory, which imports and runs that code "
                             "(default: refused; see models/spec.py)")


def _fit(args: argparse.Namespace) -> int:
    if args.nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {args.nproc}")
    if args.max_restarts < 0:
        raise ConfigError(f"--max-restarts must be >= 0, got {args.max_restarts}")
    if (args.nproc > 1 or args.max_restarts > 0) and "WORLD_SIZE" not in os.environ:
        return launch(args.nproc, args.max_restarts, args.raw_argv)
    file_options = read_config_file(args.config) if args.config else {}
    flag_options = {name: convert(name, value) for name, value in vars(args).items()
                    if name in FIELDS}
    if args.resume is not None:
        if flag_options.get("overwrite"):
            raise ConfigError("--resume continues a run and --overwrite replaces it; choose one")
        if args.resume.is_file():
            raise ConfigError(f"--resume takes a run directory, not the file {args.resume}; "
                              f"pass the directory that holds {CONFIG_FILE} and checkpoints/")
        recorded = read_run_config(args.resume)
        run_options = recorded.to_dict()
        # the user names the factory again (flag or their own config file) or trusts the run
        named = flag_options.get("model", file_options.get("model"))
        check_trusted(run_options["model"], str(args.resume / CONFIG_FILE),
                      args.trust_model_code or named == run_options["model"])
        config = resume_config(recorded, {**file_options, **flag_options}, args.resume)
    else:
        config = resolve_config(file_options, flag_options)
    try:
        results = run_fit(config, resume=args.resume is not None)
    finally:  # the CLI owns its process: under torchrun it leaves the group it joined
        leave_process_group()
    return EXIT_STOPPED if "stopped" in results else 0


def launch(nproc: int, max_restarts: int, argv: list[str]) -> int:
    """Run this same command under torch.distributed.run: `nproc` local processes, the whole group
    restarted up to `max_restarts` times when one of them fails."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", f"--max-restarts={max_restarts}",
               "-m", "batchtrain", *_without_launcher_flags(argv)]
    return subprocess.run(command).returncode


def _without_launcher_flags(argv: list[str]) -> list[str]:
    """argv less --nproc and --max-restarts (torchrun gets them as its own), values included."""
    rest, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in LAUNCHER_FLAGS:
            skip = True
        elif not arg.startswith(tuple(flag + "=" for flag in LAUNCHER_FLAGS)):
            rest.append(arg)
    return rest


def _evaluate(args: argparse.Namespace) -> int:
    run_evaluate(args.run_dir, args.data, args.data_dir, args.batch_size, args.device,
                 model=args.model, trust_model_code=args.trust_model_code, best=args.best)
    return 0


def _predict(args: argparse.Namespace) -> int:
    predictions = run_predict(args.run_dir, args.input, args.output, args.batch_size, args.device,
                              model=args.model, trust_model_code=args.trust_model_code,
                              best=args.best)
    print(f"wrote {len(predictions)} predictions of shape {predictions.shape[1:]} to {args.output}")
    return 0


def _probe(args: argparse.Namespace) -> int:
    report = run_probe(args)
    print(f"report: {report} (and probe.png beside it)")
    return 0


def _download(args: argparse.Namespace) -> int:
    print(f"{args.name}: verified files in {download(args.name, args.data_dir)}")
    return 0


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"batchtrain: warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    warnings.formatwarning = _one_line_warning  # a terminal user needs the message, not our file
    raw_argv = list(argv) if argv is not None else sys.argv[1:]
    args = build_parser().parse_args(raw_argv)
    args.raw_argv = [str(arg) for arg in raw_argv]
    try:
        return args.handler(args)
    except (ValueError, OSError) as error:  # BatchTrainError is a ValueError
        message = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
        print(f"batchtrain {args.command}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except TrainingInterrupted as interrupted:  # the checkpoint is written; run_fit said where
        return 128 + signal.Signals[interrupted.signal_name].value
    except KeyboardInterrupt:
        print(f"batchtrain {args.command}: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT.value


def console() -> None:
    """The `batchtrain` console script (and `python -m batchtrain`): main(), then the exit;
    a torchrun worker skips the interpreter's finalization (distributed.exit_process says why)."""
    code = main()
    exit_process(code)
    sys.exit(code)


if __name__ == "__main__":
    console()
