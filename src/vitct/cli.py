"""The `vitct` command: `vitct predict MODEL INPUT...` classifies CT slices with a model file;
`vitct adapt MODEL FOLDER -o ADAPTED` adapts a model file to a new site with a folder of its
labelled slices (vitct.training.adapt).

predict's exit status: 0 every input classified; 1 some could not be (their rows say why in
the error column; the others are still written); 2 the model file or the arguments are unusable,
an output that cannot be written included (-o or --attention; checked before any work); 3 an
output could not be written at the end (a disk that filled up meanwhile): the message says why,
and where the predictions were kept instead. Images unlike the model's training data are flagged
in the unfamiliar column and named on stderr; they do not change the exit status. adapt's: 0
adapted; 2 an unusable model file, labelled folder or output (one line says which and why).
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import tempfile
import warnings
from pathlib import Path

from vitct.atomic_files import OutputError, blocking_file, check_writable
from vitct.data.images import ImageWarning
from vitct.errors import UserError
from vitct.model.artifact import ArtifactError
from vitct.prediction.predictor import (
    DOWNLOAD_TIMEOUT,
    MAX_DOWNLOAD_BYTES,
    DemoModelWarning,
    InputKindWarning,
    NoFamiliarityWarning,
    load_model,
    unfamiliar_warning,
    write_csv,
)
from vitct.prediction.series_verdicts import HOW, series_verdicts, verdict_lines, write_verdicts
from vitct.training.adapt import DEFAULTS, TRAINABLE, adapt_folder


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vitct", description="ViT classifier for lung CT slices")
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser(
        "predict",
        help="classify CT slices as COVID / non-COVID",
        description="Classify images; writes CSV (path, predicted, prob_covid, error, ood_score, "
        "unfamiliar, series, left_out). A DICOM series (its files, its folder, or a folder of "
        "series) or a NIfTI volume is read from its lung range, and gets one verdict on stderr "
        "(and in --series). "
        "Exit status 0: all classified, 1: some failed (see error column), "
        "2: unusable model file or arguments (an output that cannot be written is found before "
        "any work), 3: an output could not be written at the end (the message says where the "
        "predictions were kept). Images unlike the training data are named on stderr.",
    )
    predict.add_argument("model", help="model file, e.g. results/model.safetensors")
    predict.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image, DICOM file or NIfTI volume, folder (its image files, recursively: a DICOM "
        "series or a folder of series), http(s) URL or file:// URL",
    )
    predict.add_argument("-o", "--output", metavar="CSV", help="write here instead of stdout")
    predict.add_argument(
        "--series",
        metavar="CSV",
        help="also write one verdict per DICOM series or NIfTI volume here (its lung-range "
        "slices' mean prob_covid); the verdicts are printed on stderr either way",
    )
    predict.add_argument(
        "--attention", metavar="DIR", help="also write an attention overlay PNG per image to DIR"
    )
    predict.add_argument(
        "--timeout",
        type=_positive(float),
        default=DOWNLOAD_TIMEOUT,
        metavar="S",
        help="seconds allowed per URL download (%(default)g)",
    )
    predict.add_argument(
        "--max-bytes",
        type=_positive(int),
        default=MAX_DOWNLOAD_BYTES,
        metavar="N",
        help="largest URL download in bytes (%(default)d)",
    )
    adapt = commands.add_parser(
        "adapt",
        help="adapt a model file to a new site with a folder of its labelled slices",
        description="Fine-tune a model file's last layers on a folder of labelled slices "
        "(COVID/ and non-COVID/, as the Kaggle layout) and write the adapted model file, which "
        "records what it was adapted on. It needs no training images; where they are at hand, "
        "the pipeline's adaptation (adaptation.method: pooled) trains again with both and "
        "forgets less. Exit status 0: adapted; 2: an unusable model file, folder or output (one "
        "line says why).",
    )
    adapt.add_argument("model", help="model file, e.g. results/model.safetensors")
    adapt.add_argument("folder", help="labelled slices of the new site: COVID/ and non-COVID/")
    adapt.add_argument("-o", "--output", required=True, metavar="ADAPTED", help="model file")
    adapt.add_argument("--epochs", type=_positive(int), default=DEFAULTS["epochs"], metavar="N")
    adapt.add_argument("--lr", type=_positive(float), default=DEFAULTS["lr"], metavar="X")
    adapt.add_argument(
        "--trainable",
        choices=TRAINABLE,
        default=DEFAULTS["trainable"],
        help="what is trained (%(default)s); the rest stays as trained",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return _adapt(args) if args.command == "adapt" else _predict(args)


def _adapt(args) -> int:
    try:
        check_writable(args.output)  # before any work
    except OSError as e:
        reason = _explain(e, args.output, "-o", "adapted.safetensors")
        print(f"vitct: {reason} and run again.", file=sys.stderr)
        return 2
    settings = {"epochs": args.epochs, "lr": args.lr, "trainable": args.trainable}
    try:
        record = adapt_folder(args.model, args.folder, args.output, **settings)
    except UserError as e:  # the model file, the folder or the output: one line each
        print(f"vitct: {e}", file=sys.stderr)
        return 2
    print(
        f"vitct: adapted on {record['slices']} labelled slices of '{args.folder}' "
        f"({record['classes']}); written to {args.output}",
        file=sys.stderr,
    )
    return 0


def _predict(args) -> int:
    unwritable = _check_outputs(args)  # before the model loads or any image is decoded
    if unwritable:
        for reason in unwritable:
            print(f"vitct: {reason} and run again.", file=sys.stderr)
        return 2
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DemoModelWarning)
            warnings.simplefilter("always", NoFamiliarityWarning)
            predictor = load_model(args.model, timeout=args.timeout, max_bytes=args.max_bytes)
    except ArtifactError as e:
        print(f"vitct: {e}", file=sys.stderr)
        return 2
    for warning in caught:  # one line each, not Python's warning format
        print(f"vitct: warning: {warning.message}", file=sys.stderr)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ImageWarning)
        warnings.simplefilter("always", InputKindWarning)
        table = predictor.predict(args.inputs, attention_dir=args.attention)
    for warning in caught:  # what decoding did to an image it used (partly transparent)
        print(f"vitct: warning: {warning.message}", file=sys.stderr)
    # Overlays that could not be written (a disk that filled up since the check) lose nothing.
    failed_overlays = [table.attrs["attention_error"]] if "attention_error" in table.attrs else []
    not_written = [_explain(e, args.attention, "--attention") for e in failed_overlays]
    if args.output:
        try:
            write_csv(table, args.output)
        except OutputError as e:
            reason = _explain(e.cause or e, args.output, "-o")
            not_written.append(f"{reason}; {_keep(table)}")
    else:
        try:
            write_csv(table, sys.stdout)
            sys.stdout.flush()  # a full disk or a closed pipe shows here, not at exit
        except OSError as e:
            # Python would flush the rest again at exit, and fail again, with a traceback.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            kept = _keep(table, stdout=False)
            not_written.append(f"cannot write to stdout: {e.strerror or e}; {kept}")
    unfamiliar = unfamiliar_warning(table)
    if unfamiliar:
        print(f"vitct: warning: {unfamiliar}", file=sys.stderr)
    verdicts = series_verdicts(table)
    if len(verdicts):
        print(f"vitct: one verdict per DICOM series or NIfTI volume ({HOW}):", file=sys.stderr)
        for line in verdict_lines(verdicts):
            print(f"vitct:   {line}", file=sys.stderr)
    if args.series:
        try:
            write_verdicts(verdicts, args.series)
        except OutputError as e:  # the slices' predictions are written: the verdicts are above
            not_written.append(_explain(e.cause or e, args.series, "--series", "series.csv"))
    failed = int((table.error != "").sum())
    if failed:
        print(
            f"vitct: {failed} of {len(table)} inputs could not be classified (see the error "
            "column)",
            file=sys.stderr,
        )
    for reason in not_written:
        print(f"vitct: {reason}", file=sys.stderr)
    return 3 if not_written else 1 if failed else 0


def _check_outputs(args) -> list[str]:
    """Why each output given cannot be written (none when all can), found with a probe file."""
    reasons = []
    outputs = ((args.output, "-o"), (args.series, "--series"), (args.attention, "--attention"))
    for target, option in outputs:
        if target:
            try:
                check_writable(target, folder=option == "--attention")
            except OSError as e:
                reasons.append(_explain(e, target, option))
    return reasons


def _explain(
    error: BaseException, target: str, option: str, example: str = "predictions.csv"
) -> str:
    """One line: which output, why it cannot be written, and what to do about that cause
    (`example`: a file name to suggest where a folder was given)."""
    what = "the attention overlays to " if option == "--attention" else ""
    head = f"cannot write {what}'{target}'"
    if not isinstance(error, OSError):
        return f"{head}: {error}"
    code, path = error.errno, Path(target)
    folder = path if option == "--attention" else path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if option != "--attention" and (code == errno.EISDIR or path.is_dir()):
        return f"{head}: it is a folder: name a file for -o (e.g. '{path / example}')"
    if option == "--attention" and path.exists() and not path.is_dir():
        return f"{head}: it is a file, not a folder: name a folder for --attention"
    blocking = blocking_file(path / "x" if option == "--attention" else path)
    if blocking is not None or code in (errno.ENOTDIR, errno.EEXIST):
        where = f"'{blocking}'" if blocking is not None else "a folder on its way"
        return f"{head}: {where} is a file, not a folder: write elsewhere (another {option})"
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return (
            f"{head}: the disk holding '{folder}' is full ({error.strerror}): free some space "
            f"there, or write elsewhere (another {option})"
        )
    if code in (errno.EACCES, errno.EPERM):
        return (
            f"{head}: permission denied for '{folder}': write elsewhere ({option} a folder you "
            "can write to)"
        )
    if code == errno.EROFS:
        return (
            f"{head}: '{folder}' is on a read-only file system: write elsewhere ({option} a "
            "folder on a writable disk)"
        )
    return f"{head}: {error.strerror or error} in '{folder}': write elsewhere (another {option})"


def _keep(table, stdout: bool = True) -> str:
    """Where the predictions went when their own output failed: a new temporary folder, or
    stdout (unless that is what failed) when even that cannot be written."""
    try:
        kept = Path(tempfile.mkdtemp(prefix="vitct-predict-")) / "predictions.csv"
        write_csv(table, kept)
        return f"the predictions are kept in '{kept}'"
    except (OSError, OutputError) as e:
        if not stdout:
            return f"they could not be kept in a temporary folder either ({e})"
        write_csv(table, sys.stdout)
        return "the predictions were written to stdout instead"


if __name__ == "__main__":
    sys.exit(main())
