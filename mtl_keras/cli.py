"""The ``mtl-keras`` command: multi-task dense prediction (semantic segmentation, depth, normals,
edges, saliency, human parts) with Keras 3 / TensorFlow.

Train a recipe on the embedded synthetic scenes or a real dataset (NYUD-v2, PASCAL-Context,
Cityscapes), evaluate it against trivial and single-task baselines (Δ_MTL), export a SavedModel
for TF Serving, compare runs in one table, count params and FLOPs, and list what exists: recipes,
architectures, backbones, heads, balancers, tasks and datasets. Names may be written as the papers
write them (``MTI-Net``, ``hrnet_w18``, ``nddr``); the canonical name is printed.

TensorFlow is imported only by the commands that need it (not by ``--help`` or ``list recipes``),
with its start-up lines hidden unless ``--debug``.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import sys

import mtl_keras
from mtl_keras._commands import (
    LIST_KINDS,
    cmd_evaluate,
    cmd_export,
    cmd_list,
    cmd_preview,
    cmd_summary,
    cmd_train,
)


def _needs_tensorflow(command: str | None, kind: str | None = None) -> bool:
    return command is not None and not (command == "list" and kind == "recipes")


@contextlib.contextmanager
def _native_stderr_hidden():
    """Send file descriptor 2 to /dev/null: TensorFlow's C++ start-up lines ("All log messages
    before absl::InitializeLog() ...", oneDNN, CUDA) ignore TF_CPP_MIN_LOG_LEVEL."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _load_tensorflow(debug: bool) -> None:
    """Import TensorFlow before a command does, quietly unless ``--debug``."""
    if "tensorflow" in sys.modules:
        return
    with contextlib.nullcontext() if debug else _native_stderr_hidden():
        import tensorflow  # noqa: F401


def _integer(low: int, meaning: str = ""):
    """An argparse ``type``: an integer ``>= low`` (``meaning`` explains the bound)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}{meaning}, got {text!r}")
        return value

    return parse


#: the names of `mtl_keras.evaluation.protocol.PROTOCOLS` (written here: that module imports
#: TensorFlow, which ``--help`` does not load)
PROTOCOL_NAMES = ("survey", "invpt")

#: exit codes of ``main`` (also in the help's epilog and the README)
EXIT_REFUSED = 2
EXIT_FILE = 3

EPILOG = (
    "Run 'mtl-keras COMMAND --help' for a command's options. Exit codes: 0 done; 1 an unexpected "
    "error (a bug; its traceback is shown); 2 the input was refused (an argument, a recipe field, "
    "a name, the content of a file) or the run stopped on an error it reports; 3 a file or folder "
    "could not be read or written (missing, empty or corrupt, no permission, a file where a "
    "folder is expected, a full disk). Errors are one line; --debug shows their traceback."
)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; ``compare``'s own arguments are added only when ``command`` is ``compare``
    (they come from `mtl_keras.evaluation.compare`, which imports TensorFlow)."""
    p = argparse.ArgumentParser(
        prog="mtl-keras",
        description=" ".join(__doc__.split("\n\n")[:3]).replace("``", ""),
        epilog=EPILOG,
    )
    p.add_argument("--version", action="version", version=f"mtl-keras {mtl_keras.__version__}")
    p.add_argument(
        "--debug",
        action="store_true",
        help="show TensorFlow's start-up and INFO logs and full tracebacks of errors",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sp = sub.add_parser(
        "list",
        help="names with one-line descriptions: recipes, architectures, backbones, ...",
        description="Print the registered names of one kind (all kinds when none is given).",
    )
    sp.add_argument("kind", nargs="?", choices=LIST_KINDS)
    sp.set_defaults(func=cmd_list)

    def recipe_args(sp, required=True):
        sp.add_argument("--recipe", required=required, help="recipe name (see recipes/)")
        sp.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a recipe field; VALUE is JSON or a plain string",
        )

    sp = sub.add_parser("train", help="train a recipe, evaluate it and export a SavedModel")
    recipe_args(sp)
    sp.add_argument("--no-export", action="store_true")
    sp.add_argument(
        "--quiet",
        action="store_true",
        help="one line per epoch (the metrics and where the files went still print)",
    )
    sp.add_argument(
        "--new-run",
        action="store_true",
        help="train a new model in a new run folder (NAME-2, NAME-3, ...; the newest one "
        "resumes if it was interrupted) instead of reporting a finished run",
    )
    sp.add_argument(
        "--strategy",
        metavar="{default,mirrored,multi_worker,tpu}",
        help="distribution strategy (multi_worker reads TF_CONFIG); see docs/scale_out.md",
    )
    sp.add_argument(
        "--precision",
        metavar="{float32,mixed_float16,mixed_bfloat16}",
        help="dtype policy of the layers (losses, metrics and exports stay float32)",
    )
    ray = sp.add_argument_group("Ray Train (--launcher ray; docs/scale_out.md)")
    ray.add_argument(
        "--launcher",
        choices=("local", "ray"),
        default="local",
        help="local: this process (default); ray: a Ray Train job of --workers multi_worker "
        'workers (pip install "mtl_keras[ray]")',
    )
    ray.add_argument("--workers", type=_integer(1), metavar="N", help="Ray workers (processes)")
    ray.add_argument(
        "--ray-address", metavar="ADDR",
        help="an existing Ray cluster (auto, ray://HOST:10001); default: a local one started here",
    )  # fmt: skip
    ray.add_argument(
        "--cpus-per-worker", type=float, default=1.0, metavar="C",
        help="CPUs reserved per worker, also its TensorFlow threads (default 1)",
    )  # fmt: skip
    ray.add_argument(
        "--gpus-per-worker", type=float, default=0.0, metavar="G",
        help="GPUs per worker, each a replica of it (default 0)",
    )  # fmt: skip
    ray.add_argument(
        "--max-failures", type=_integer(-1), default=3, metavar="K",
        help="restarts of the workers after a failure (-1: no limit; default 3)",
    )  # fmt: skip
    ray.add_argument(
        "--ray-storage", metavar="PATH_OR_URI",
        help="Ray Train's storage (a shared folder or s3://, gs://); default <run folder>/ray",
    )  # fmt: skip
    sp.set_defaults(func=cmd_train)

    sp = sub.add_parser("evaluate", help="evaluate trained weights on the validation split")
    recipe_args(sp)
    sp.add_argument("--weights")
    sp.add_argument("--baselines", help="single-task result JSON files or folder, for Δ_MTL")
    sp.add_argument(
        "--protocol",
        choices=PROTOCOL_NAMES,
        help="score at the labels' original resolution under a named evaluation protocol "
        "(survey: the survey's code; invpt: InvPT/TaskPrompter/MLoRE's) and write "
        "protocol.json; see mtl_keras.evaluation.protocol",
    )
    sp.add_argument(
        "--max-examples",
        type=_integer(1),
        metavar="N",
        help="with --protocol: score the first N validation examples (default: the recipe's "
        "val_examples)",
    )
    sp.add_argument(
        "--out", help="result file (default: <run folder>/eval.json, protocol.json with --protocol)"
    )
    sp.set_defaults(func=cmd_evaluate)

    sp = sub.add_parser("export", help="export trained weights as a TF Serving SavedModel")
    recipe_args(sp)
    sp.add_argument("--weights")
    sp.add_argument("--export-dir")
    sp.add_argument(
        "--version",
        type=_integer(1, " (a TF Serving version folder)"),
        help="version folder to write (default: one above the highest there)",
    )
    sp.set_defaults(func=cmd_export)

    sp = sub.add_parser("preview", help="write a PNG grid of synthetic images and labels")
    sp.add_argument("--out", default="runs/preview.png")
    sp.add_argument("--n", type=_integer(1), default=6, help="number of scenes")
    sp.add_argument(
        "--image-size", type=_integer(1), nargs=2, default=(128, 128), metavar=("H", "W")
    )
    sp.add_argument("--split", default="train")
    sp.add_argument("--seed", type=_integer(0), default=0)
    sp.set_defaults(func=cmd_preview)

    sp = sub.add_parser(
        "summary", help="params and FLOPs of a recipe's model, an arch or a backbone"
    )
    recipe_args(sp, required=False)
    sp.add_argument(
        "--arch",
        help="architecture name; its builder's arguments: --set architecture_kwargs='{...}'",
    )
    sp.add_argument("--backbone")
    sp.add_argument("--tasks", help="comma-separated task names (with --arch)")
    sp.add_argument("--image-size", type=_integer(1), nargs=2, default=None, metavar=("H", "W"))
    sp.set_defaults(func=cmd_summary)

    sp = sub.add_parser(
        "compare", help="Markdown table and Δ_MTL chart over run folders, or a study's page"
    )
    if command == "compare":
        from mtl_keras.evaluation import study

        study.add_arguments(sp)  # run folders, or a study's results file
        sp.set_defaults(func=study.run)
    return p


#: what to do about an OSError, by errno
_FILE_ERROR_FIXES = {
    errno.EACCES: "no permission: choose another path (--out, --export-dir, --set run_dir=...) "
    "or change its permissions",
    errno.EPERM: "not permitted: choose another path (--out, --export-dir, --set run_dir=...)",
    errno.EROFS: "a read-only file system: write elsewhere (--out, --export-dir, "
    "--set run_dir=...)",
    errno.ENOSPC: "the disk is full: free space or write elsewhere (--out, --export-dir, "
    "--set run_dir=...)",
    errno.EDQUOT: "the disk quota is used up: free space or write elsewhere",
    errno.ENOTDIR: "a file stands where a folder is expected: remove it or choose another path",
    errno.EISDIR: "a folder stands where a file is expected: give the file's path",
    errno.EEXIST: "it exists already: remove it or choose another path",
    errno.ENOENT: "check the path",
}


def _path_text(name) -> str:
    """An OSError's file name as text (a path, bytes or a file descriptor)."""
    return os.fsdecode(name) if isinstance(name, (str, bytes, os.PathLike)) else str(name)


def _file_error(err: OSError) -> str:
    """One line for an OSError: the path, the problem and what to do about it."""
    if err.filename is None or not err.strerror:
        return str(err)
    where = _path_text(err.filename)
    if err.filename2 is not None:
        where += f" -> {_path_text(err.filename2)}"
    fix = _FILE_ERROR_FIXES.get(err.errno)
    return f"{where}: {err.strerror}" + (f"; {fix}" if fix else "")


def _user_error(err: Exception) -> bool:
    """Whether ``err`` is one a user acts on from its message (printed without a traceback)."""
    if isinstance(err, ValueError):
        return True
    if "mtl_keras.training" not in sys.modules:  # its errors can only come from it once imported
        return False
    from mtl_keras.training import NonFiniteLossError
    from mtl_keras.training.distribute import WorkerLostError, WorkerTimeoutError
    from mtl_keras.training.ray_launcher import RayJobError, RayNotInstalledError

    errors = (NonFiniteLossError, WorkerTimeoutError, WorkerLostError)
    return isinstance(err, (*errors, RayJobError, RayNotInstalledError))


def _command_of(argv: list[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


class _StderrHandler(logging.StreamHandler):
    """Writes each record to the ``sys.stderr`` of the moment (tests and callers replace it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


_LOG_HANDLER = _StderrHandler()
_LOG_HANDLER.setFormatter(logging.Formatter("mtl-keras: %(message)s"))


def _show_canonical_names(debug: bool) -> None:
    """The ``mtl_keras`` logger on stderr: which canonical name an alias stood for."""
    logger = logging.getLogger("mtl_keras")
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    if _LOG_HANDLER not in logger.handlers:
        logger.addHandler(_LOG_HANDLER)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv  # before parsing: the parser of `compare` imports TensorFlow
    if not debug:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if _command_of(argv) == "compare":
        _load_tensorflow(debug)
    args = build_parser(_command_of(argv)).parse_args(argv)
    _show_canonical_names(args.debug)
    if _needs_tensorflow(args.command, getattr(args, "kind", None)):
        _load_tensorflow(args.debug)
    if args.command == "summary" and not (args.recipe or args.arch or args.backbone):
        print("error: summary needs --recipe, --arch or --backbone", file=sys.stderr)
        return EXIT_REFUSED
    if args.command == "summary":
        args.image_size_given = args.image_size is not None
        args.image_size = args.image_size or (224, 224)
    try:
        return args.func(args)
    except OSError as err:
        if args.debug:
            raise
        print(f"error: {_file_error(err)}", file=sys.stderr)
        return EXIT_FILE
    except Exception as err:
        if args.debug or not _user_error(err):
            raise
        print(f"error: {err}", file=sys.stderr)
        return EXIT_REFUSED


if __name__ == "__main__":
    sys.exit(main())
