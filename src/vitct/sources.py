"""Where the images come from: the synthetic demo, a local folder or zip, or Kaggle.

Each source ends in a folder in the Kaggle layout (COVID/, non-COVID/). Extraction and download
happen in a temporary folder beside the target and are renamed into place only when complete,
so a failure never leaves partial data where the next step would take it as complete.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from vitct.data import CLASS_DIRS
from vitct.step import UserError

log = logging.getLogger("vitct.sources")

LOCAL_COPY_HINT = (
    "To use a copy you already have, download the zip from "
    "https://www.kaggle.com/datasets/{slug} in a browser and set "
    "`dataset: {{source: local, path: /path/to/archive.zip}}` (a folder in the Kaggle layout "
    "works too)."
)


def find_class_root(folder: Path) -> Path:
    """The folder that holds COVID/ and non-COVID/, at the top or nested below (as archives
    often add a folder of their own)."""
    candidates = [folder, *sorted(p for p in folder.rglob("*") if p.is_dir())]
    for candidate in candidates:
        if all((candidate / c).is_dir() for c in CLASS_DIRS):
            return candidate
    present = sorted({p.name for p in folder.rglob("*") if p.is_dir()})
    missing = [c for c in CLASS_DIRS if c not in present]
    raise UserError(
        f"no folder under '{folder}' holds both {' and '.join(CLASS_DIRS)}; missing: "
        f"{', '.join(missing)} (folders seen: {present[:10] or 'none'}). The data must have "
        "the Kaggle layout: one folder per class."
    )


def safe_extract(archive: Path, target: Path, max_bytes: int) -> None:
    """Unpack a zip into target (created atomically), refusing unsafe or oversized archives."""
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as e:
        raise UserError(
            f"'{archive}' is not a readable zip ({e}); the download may be truncated: delete it "
            "and run again."
        ) from None
    with zf:
        total = 0
        for info in zf.infolist():
            name = PurePosixPath(info.filename.replace("\\", "/"))
            if name.is_absolute() or ".." in name.parts or info.filename.startswith("/"):
                raise UserError(f"refusing '{archive}': entry '{info.filename}' escapes the folder")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise UserError(f"refusing '{archive}': entry '{info.filename}' is a link")
            total += info.file_size
        if total > max_bytes:
            raise UserError(
                f"refusing '{archive}': it would expand to {total / 2**20:.0f} MiB, more than "
                f"dataset.max_extract_mb ({max_bytes / 2**20:.0f} MiB); raise that if it is right."
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=target.parent))
        try:
            zf.extractall(tmp)
            if zf.testzip() is not None:
                raise UserError(f"'{archive}' has a corrupt member; fetch it again")
        except (zipfile.BadZipFile, EOFError, OSError) as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise UserError(f"could not unpack '{archive}': {e}") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


def from_local(path: str, work_dir: Path, max_bytes: int) -> Path:
    """A folder is used where it is; a zip is unpacked into work_dir."""
    source = Path(path).expanduser()
    if not source.exists():
        raise UserError(f"dataset.path '{source}' does not exist; point it at the folder or zip.")
    if source.is_dir():
        return find_class_root(source)
    if not zipfile.is_zipfile(source):
        raise UserError(f"dataset.path '{source}' is neither a folder nor a zip archive.")
    target = work_dir / "extracted"
    safe_extract(source, target, max_bytes)
    return find_class_root(target)


def from_kaggle(slug: str, work_dir: Path, max_bytes: int, cli: str = "kaggle") -> Path:
    """Download the dataset zip with the official Kaggle CLI and unpack it.

    The CLI runs in a subprocess: `import kaggle` authenticates at import time and exits the
    interpreter without credentials. Public datasets download anonymously with the CLI, so it is
    tried first; its own error text (on stdout) is mapped to one clear message.
    """
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
        # The CLI reads the credentials from the environment or ~/.kaggle; we never print them.
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    except subprocess.TimeoutExpired:
        raise UserError(f"the Kaggle download did not finish within an hour. {hint}") from None
    output = f"{proc.stdout}\n{proc.stderr}"
    log.info("kaggle CLI exit %d:\n%s", proc.returncode, _redact(output).strip())
    zips = sorted(download.glob("*.zip"))
    if proc.returncode != 0 or not zips:
        raise UserError(f"{explain_kaggle_failure(output, slug)} {hint}")
    safe_extract(zips[0], work_dir / "extracted", max_bytes)
    zips[0].unlink()  # the unpacked copy is what the pipeline reads
    return find_class_root(work_dir / "extracted")


def explain_kaggle_failure(output: str, slug: str) -> str:
    text = output.lower()
    if "no module named" in text:
        return f"the Kaggle CLI is broken ({output.strip().splitlines()[-1]}): pip install six."
    if any(s in text for s in ("name resolution", "failed to resolve", "connection", "network")):
        return "Kaggle cannot be reached (no network, or a proxy blocks it)."
    if "401" in text or "unauthorized" in text:
        return (
            "Kaggle rejected the credentials: create a new API token on kaggle.com (Settings -> "
            "API) and put it in ~/.kaggle/kaggle.json or KAGGLE_USERNAME/KAGGLE_KEY."
        )
    if "403" in text or "forbidden" in text:
        return f"Kaggle refused access to {slug}: accept its terms on the dataset page first."
    if "404" in text or "not found" in text:
        return f"Kaggle has no dataset '{slug}': check dataset.kaggle_dataset."
    if "could not find kaggle.json" in text or "authenticate" in text or "credentials" in text:
        return (
            "Kaggle wants credentials: put an API token in ~/.kaggle/kaggle.json (or set "
            "KAGGLE_USERNAME and KAGGLE_KEY, or KAGGLE_API_TOKEN)."
        )
    if "no space left" in text or "disk quota" in text:
        return "the disk is full: free space where results/ lives and run again."
    last = output.strip().splitlines()[-1] if output.strip() else "no output"
    return f"the Kaggle download failed ({last})."


def _redact(text: str) -> str:
    for var in ("KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        secret = os.environ.get(var)
        if secret:
            text = text.replace(secret, "***")
    return text
