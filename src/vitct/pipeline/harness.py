"""Shared harness for the workflow's step scripts: log file, threads, and clean failures.

Every step writes its progress to the rule's log. An expected failure (bad data, bad config, a
download that cannot happen) ends with one message that says what to do, printed to the log and
to the console, instead of a traceback wall; anything unexpected keeps its full traceback.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable

from vitct.atomic_files import explain_write_failure, is_write_failure
from vitct.errors import UserError


def _expected_message(error: BaseException) -> str | None:
    """The one-line message of a failure the user can fix, None for anything else."""
    if isinstance(error, UserError):
        return f"{type(error).__name__}: {error}"
    if isinstance(error, OSError) and error.filename is not None and is_write_failure(error):
        # A write that did not go through vitct.atomic_files (a library's own file): the same
        # words.
        return f"OutputError: {explain_write_failure(error, error.filename)}"
    return None


def configure_threads(torch, threads: int) -> None:
    """Make torch use exactly the job's threads, so parallel jobs never oversubscribe."""
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass


def run(snakemake, main: Callable[..., None]) -> None:
    """Run main(snakemake) with logging to snakemake.log[0] and torch limited to the job's
    threads."""
    console = sys.stderr
    log_path = snakemake.log[0]
    with open(log_path, "w", buffering=1) as log_file:
        sys.stderr = log_file  # tqdm and warnings land in the log too
        handler = logging.StreamHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(logging.INFO)
        try:
            if "torch" in sys.modules:  # only steps that use torch pay for importing it
                configure_threads(sys.modules["torch"], snakemake.threads)
            main(snakemake)
        except BaseException as e:
            message = _expected_message(e)
            if message is None:
                logging.error("unexpected failure:\n%s", traceback.format_exc())
                raise
            logging.error(message)
            print(
                f"\nvitct: rule '{snakemake.rule}' failed: {message}\n(log: {log_path})",
                file=console,
            )
            sys.exit(1)
        finally:
            sys.stderr = console
