"""Where the images come from: the synthetic demo, a local folder or zip, or Kaggle.

Each source ends in a folder in the Kaggle layout (COVID/, non-COVID/). Generation, extraction
and download happen in a temporary folder beside the target and are renamed into place only
when complete, so a failure never leaves partial data where the next step would take it as
complete.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import stat
import subprocess
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from vitct.atomic_files import explain_write_failure, is_write_failure
from vitct.data.classes import CLASS_DIRS
from vitct.data.synthetic import generate
from vitct.data.synthetic_dicom import generate_series
from vitct.errors import UserError

log = logging.getLogger(__name__)

LOCAL_COPY_HINT = (
    "To use a copy you already have, download the zip from "
    "https://www.kaggle.com/datasets/{slug} in a browser and set "
    "`dataset: {{source: local, path: /path/to/archive.zip}}` (a folder in the Kaggle layout "
    "works too)."
)


ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".7z", ".rar")


def find_class_root(folder: Path, unpacked_from: str | None = None) -> Path:
    """The folder that holds COVID/ and non-COVID/, at the top or nested below (as archives
    often add a folder of their own); the shallowest wins.

    unpacked_from names the archive folder was unpacked from: messages name that, not folder.
    """
    # macOS zips carry a __MACOSX/ shadow tree with the same folder names, holding only
    # ._ metadata files: never take it (or any hidden folder) for the data.
    subdirs = [p for p in folder.rglob("*") if p.is_dir() and not _hidden(p.relative_to(folder))]
    for candidate in [folder, *sorted(subdirs, key=lambda p: (len(p.parts), p))]:
        if all((candidate / c).is_dir() for c in CLASS_DIRS):
            return candidate
    name = unpacked_from or f"'{folder}'"
    archives = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file()
        and p.name.lower().endswith(ARCHIVE_SUFFIXES)
        and not _hidden(p.relative_to(folder))
    )
    if archives:  # a download of a download: the images are one archive further in
        inner = archives[0]
        if unpacked_from:
            how = f"unpack {name} and point dataset.path at the '{inner}' inside it"
        else:
            how = f"point dataset.path at '{folder / inner}'"
        raise UserError(
            f"{name} holds another archive, '{inner}', rather than the class folders "
            f"({' and '.join(CLASS_DIRS)}): {how} (or at the folder that one unpacks to)."
        )
    present = sorted({p.name for p in subdirs})
    missing = [c for c in CLASS_DIRS if c not in present]
    raise UserError(
        f"no folder in {name} holds both {' and '.join(CLASS_DIRS)}; missing: "
        f"{', '.join(missing) or 'none, but they are not side by side'} (folders seen: "
        f"{present[:10] or 'none'}). The data must have the Kaggle layout: one folder per class."
    )


def _hidden(relative: Path) -> bool:
    return any(part.startswith((".", "__MACOSX")) for part in relative.parts)


def safe_extract(archive: Path, target: Path, max_bytes: int) -> None:
    """Unpack a zip into target (created atomically), refusing unsafe or oversized archives.

    An earlier target is removed first: after a failure no stale data is left to be mistaken
    for this archive's.
    """
    if target.exists():
        shutil.rmtree(target)
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as e:
        raise UserError(
            f"'{archive}' is not a readable zip ({e}); it is probably truncated: fetch it again."
        ) from None
    with zf:
        total = 0
        for info in zf.infolist():
            name = PurePosixPath(info.filename.replace("\\", "/"))
            if name.is_absolute() or ".." in name.parts:
                raise UserError(f"refusing '{archive}': entry '{info.filename}' escapes the folder")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise UserError(f"refusing '{archive}': entry '{info.filename}' is a link")
            total += info.file_size  # reading stops at the declared size, so this is a bound
        if total > max_bytes:
            raise UserError(
                f"refusing '{archive}': it would expand to {total / 2**20:.0f} MiB, more than "
                f"dataset.max_extract_mb ({max_bytes / 2**20:.0f} MiB); raise that if it is right."
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=target.parent))
        try:
            zf.extractall(tmp)  # checks every member's CRC as it reads it
        except (zipfile.BadZipFile, EOFError, OSError) as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, OSError) and is_write_failure(e):  # the disk, not the archive
                where = e.filename or tmp
                raise UserError(
                    f"could not unpack '{archive}': {explain_write_failure(e, where, total)}"
                ) from None
            raise UserError(f"could not unpack '{archive}': {e}; fetch it again.") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    os.replace(tmp, target)


def from_demo(
    work_dir: Path, n_per_class: int, seed: int, scanner: str = "a", fmt: str = "png"
) -> Path:
    """The synthetic slices in work_dir/images, generated from nothing every time: the folder is
    replaced whole, so changed settings (fewer slices, say) never keep an earlier run's images.
    fmt "dicom" writes them as DICOM series, a patient each (vitct.data.synthetic_dicom)."""
    target = work_dir / "images"
    work_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=work_dir))
    try:
        if fmt == "dicom":
            generate_series(tmp, n_per_class, seed)
        else:
            generate(tmp, n_per_class, seed, scanner=scanner)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return find_class_root(target)


# The first bytes of a zip: a local file header, or the end record of an empty archive.
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")


def from_local(path: str, work_dir: Path, max_bytes: int) -> Path:
    """A folder is used where it is; a zip is unpacked into work_dir (and removed again when
    anything fails, so no copy is left behind)."""
    source = Path(path).expanduser()
    if not source.exists():
        raise UserError(f"dataset.path '{source}' does not exist; point it at the folder or zip.")
    if source.is_dir():
        return find_class_root(source)
    with _unpacked_or_nothing(work_dir):
        if source.stat().st_size == 0:
            raise UserError(
                f"dataset.path '{source}' is empty (0 bytes): its download or copy did not "
                "complete; fetch it again."
            )
        with open(source, "rb") as f:
            # A zip cut short has lost its central directory, so is_zipfile says no; it still
            # starts like one, and safe_extract says it is truncated.
            looks_like_zip = f.read(4) in ZIP_MAGIC
        if not looks_like_zip and not zipfile.is_zipfile(source):
            raise UserError(
                f"dataset.path '{source}' is neither a folder nor a zip archive; point it at "
                "the folder in the Kaggle layout or at the zip (unpack other archives first)."
            )
        target = work_dir / "extracted"
        safe_extract(source, target, max_bytes)
        return find_class_root(target, unpacked_from=f"'{source}'")


@contextlib.contextmanager
def _unpacked_or_nothing(work_dir: Path):
    """On any failure, remove what was unpacked or downloaded into work_dir (an earlier run's
    copy too): a failed fetch leaves no data that could be taken for this source's."""
    try:
        yield
    except BaseException:
        for name in ("extracted", "download"):
            shutil.rmtree(work_dir / name, ignore_errors=True)
        raise


def from_kaggle(slug: str, work_dir: Path, max_bytes: int, cli: str = "kaggle") -> Path:
    """Download the dataset zip with the official Kaggle CLI and unpack it.

    The CLI runs in a subprocess: `import kaggle` authenticates at import time (1.x exits the
    interpreter without credentials). kaggle 2.x downloads public datasets anonymously, so no
    credentials are required up front; the CLI's error text (stdout or stderr) is mapped to one
    clear message.
    """
    with _unpacked_or_nothing(work_dir):
        _download_and_unpack(slug, work_dir, max_bytes, cli)
        try:
            return find_class_root(work_dir / "extracted", f"the zip of the Kaggle dataset {slug}")
        except UserError as e:
            raise UserError(f"{e} {LOCAL_COPY_HINT.format(slug=slug)}") from None


def _download_and_unpack(slug: str, work_dir: Path, max_bytes: int, cli: str) -> None:
    """work_dir/extracted from the dataset's zip, which the CLI downloads to work_dir/download."""
    hint = LOCAL_COPY_HINT.format(slug=slug)
    if shutil.which(cli) is None:
        raise UserError(f"the Kaggle CLI '{cli}' is not installed: pip install kaggle six. {hint}")
    download = work_dir / "download"
    if download.exists():
        shutil.rmtree(download)
    download.mkdir(parents=True)
    cmd = [cli, "datasets", "download", "-d", slug, "-p", str(download), "--force"]
    log.info("running: %s", " ".join(cmd))
    try:
        # The CLI reads the credentials from the environment or ~/.kaggle; we never print
        # them. VERBOSE would make it dump its requests, credentials included: not passed on.
        env = {k: v for k, v in os.environ.items() if k not in ("VERBOSE", "VERBOSE_OUTPUT")}
        try:
            # Bytes, not text: text mode would turn each progress-bar redraw into a line.
            proc = subprocess.run(cmd, capture_output=True, timeout=3600, env=env)
        except subprocess.TimeoutExpired:
            raise UserError(f"the Kaggle download did not finish within an hour. {hint}") from None
        output = _drop_progress(
            f"{proc.stdout.decode(errors='replace')}\n{proc.stderr.decode(errors='replace')}"
        )
        log.info("kaggle CLI exit %d:\n%s", proc.returncode, _redact(output).strip())
        zips = sorted(download.glob("*.zip"))
        if proc.returncode != 0 or not zips:
            raise UserError(_redact(f"{explain_kaggle_failure(output, slug)} {hint}"))
        safe_extract(zips[0], work_dir / "extracted", max_bytes)
    finally:
        # The unpacked copy is what the pipeline reads; a failed or cut download is not kept
        # (the CLI is run with --force, so it would not resume from it anyway).
        shutil.rmtree(download, ignore_errors=True)


# What the Kaggle CLI prints (stdout or stderr, lower-cased) in each case; kaggle 2.x texts,
# and 1.x ones where they differ. A 401 prints the CLI's "Authentication required" help; a
# rejected KAGGLE_API_TOKEN ends in a traceback; 1.x stops with "Could not find kaggle.json".
_AUTH = r"authentication required|could not find kaggle\.json|unauthenticated|unauthorized|\b401\b"
_CUT = r"connection broken|download failed after|incompleteread|does not match expected size"
_OFFLINE = (
    r"name resolution|failed to resolve|failed to establish|max retries exceeded|timed out"
    r"|network is unreachable"
)
_DENIED = r"you don't have access|forbidden|\b403\b"
_MISSING = r"not found|\b404\b"
_RATE = r"rate limited|\b429\b"
_SERVER = r"problem on kaggle's side|\b5\d\d server error"


def explain_kaggle_failure(output: str, slug: str) -> str:
    """One line for what the Kaggle CLI printed."""
    text = output.lower()
    if "no module named" in text:
        return f"the Kaggle CLI is broken ({output.strip().splitlines()[-1]}): pip install six."
    # First: the CLI reports a cut download as a "Connection error", with byte counts.
    if re.search(_CUT, text):
        return "the download from Kaggle was cut off before it completed: run again."
    if re.search(_AUTH, text):
        if not _credentials_found():
            return (
                "Kaggle asks for credentials and none are set: create an API token at "
                "https://www.kaggle.com/settings/api and set KAGGLE_API_TOKEN (or save it in "
                "~/.kaggle/access_token; a kaggle.json or KAGGLE_USERNAME/KAGGLE_KEY works too)."
            )
        return (
            "Kaggle rejected the credentials (expired or revoked?): create a new API token at "
            "https://www.kaggle.com/settings/api and replace the old one (KAGGLE_API_TOKEN, "
            "~/.kaggle/access_token, ~/.kaggle/kaggle.json or KAGGLE_USERNAME/KAGGLE_KEY)."
        )
    if re.search(_OFFLINE, text):
        return "Kaggle cannot be reached (no network, or a proxy blocks it)."
    if re.search(_DENIED, text):
        return f"Kaggle refused access to {slug}: accept its terms on the dataset page first."
    if re.search(_MISSING, text):
        return f"Kaggle has no dataset '{slug}': check dataset.kaggle_dataset."
    if re.search(_RATE, text):
        return "Kaggle rate-limited this account: wait a while and run again."
    if re.search(_SERVER, text):
        return "Kaggle had a server error: try again later."
    if "no space left" in text or "disk quota" in text:
        return "the disk is full: free space where results/ lives and run again."
    last = output.strip().splitlines()[-1] if output.strip() else "no output"
    return f"the Kaggle download failed ({last})."


def _credentials_found() -> bool:
    """Whether any Kaggle credentials are set, where the CLI looks for them."""
    env = os.environ
    if env.get("KAGGLE_API_TOKEN") or (env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY")):
        return True
    home = Path.home()
    config_dirs = [
        home / ".kaggle",
        Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "kaggle",
    ]
    if env.get("KAGGLE_CONFIG_DIR"):
        config_dirs.append(Path(env["KAGGLE_CONFIG_DIR"]))
    names = ("kaggle.json", "access_token", "access_token.txt", "credentials.json")
    return any((d / n).is_file() for d in config_dirs for n in names)


def _drop_progress(text: str) -> str:
    """Keep the last state of each progress bar (the CLI redraws them with carriage returns)."""
    return "\n".join(line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n"))


def _redact(text: str) -> str:
    """What the CLI printed, without credentials (should it ever print them)."""
    text = re.sub(r"(?im)^((?:proxy-)?authorization):.*$", r"\1: ***", text)
    for var in ("KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        secret = os.environ.get(var)
        if secret:
            text = text.replace(secret, "***")
    return text
