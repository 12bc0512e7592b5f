"""The `vitct` command: `vitct predict MODEL INPUT...` classifies CT slices with a model file.

Exit status: 0 every input classified, 1 some could not be (their rows say why in the error
column; the others are still written), 2 the model file or the arguments are unusable. Images
unlike the model's training data are flagged in the unfamiliar column and named on stderr; they
do not change the exit status.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from vitct.artifact import ArtifactError
from vitct.predict import (
    DOWNLOAD_TIMEOUT,
    MAX_DOWNLOAD_BYTES,
    DemoModelWarning,
    NoFamiliarityWarning,
    load_model,
    unfamiliar_warning,
    write_csv,
)


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
        "unfamiliar). Exit status 0: all classified, 1: some failed (see error column), "
        "2: unusable model file. Images unlike the training data are named on stderr.",
    )
    predict.add_argument("model", help="model file, e.g. results/final/model.safetensors")
    predict.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image file, folder (its image files, recursively) or http(s) URL",
    )
    predict.add_argument("-o", "--output", metavar="CSV", help="write here instead of stdout")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
    try:
        table = predictor.predict(args.inputs, attention_dir=args.attention)
        if args.output:
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        write_csv(table, args.output or sys.stdout)
    except OSError as e:  # an unwritable output file or attention folder
        print(f"vitct: cannot write output: {e}", file=sys.stderr)
        return 2
    unfamiliar = unfamiliar_warning(table)
    if unfamiliar:
        print(f"vitct: warning: {unfamiliar}", file=sys.stderr)
    failed = int((table.error != "").sum())
    if failed:
        print(
            f"vitct: {failed} of {len(table)} inputs could not be classified (see the error "
            "column)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
