"""Every step's files go through vitct.atomic_files: a full disk or an unwritable folder ends in
one line naming the file, the space it needed and what to do, and leaves no partial file.

The disk is not really filled: the write itself is replaced by one that writes half the bytes
and then fails as the operating system would.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import REPO

from vitct import atomic_files
from vitct.atomic_files import OutputError, write_text
from vitct.data.cache import save_cache
from vitct.data.sources import from_demo, safe_extract
from vitct.errors import UserError
from vitct.pipeline import harness
from vitct.training.checkpoint import save_atomically

FAILURES = {
    "full disk": (errno.ENOSPC, "No space left on device", "is full"),
    "quota": (errno.EDQUOT, "Disk quota exceeded", "is full"),
    "unwritable folder": (errno.EACCES, "Permission denied", "Make that folder writable"),
    "read-only disk": (errno.EROFS, "Read-only file system", "Make that folder writable"),
}


@pytest.fixture(params=FAILURES, ids=list(FAILURES))
def failing_disk(request, monkeypatch):
    """Writes stop halfway with the OS error of the case; yields (error text, advice)."""
    code, text, advice = FAILURES[request.param]

    def write_half(path, data):
        with open(path, "wb") as f:
            f.write(bytes(data)[: len(data) // 2])
        raise OSError(code, text, str(path))

    monkeypatch.setattr(atomic_files, "_write_file", write_half)
    return text, advice


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


def test_a_failed_write_names_file_size_and_cause_and_keeps_the_old_file(failing_disk, tmp_path):
    text, advice = failing_disk
    target = tmp_path / "results" / "metrics.json"
    target.parent.mkdir()
    target.write_text("the earlier run's")
    with pytest.raises(OutputError) as failed:
        write_text(target, "x" * 3000)
    message = str(failed.value)
    assert f"cannot write '{target}' (2.9 KiB needed)" in message
    assert text in message and advice in message and "\n" not in message
    assert target.read_text() == "the earlier run's"  # whole or not at all
    assert leftovers(tmp_path) == ["metrics.json"]  # no partial file beside it


def test_a_full_disk_mid_checkpoint_is_named_not_an_iostream_error(failing_disk, tmp_path):
    target = tmp_path / "resume.pt"
    with pytest.raises(OutputError, match=r"cannot write '.*resume\.pt' \(\d+\.\d KiB needed\)"):
        save_atomically({"weights": torch.zeros(1000)}, target)
    with pytest.raises(OutputError, match="images.npz"):
        save_cache(tmp_path / "images.npz", {"x": np.zeros((4, 8, 8), np.uint8)})
    assert leftovers(tmp_path) == []


def test_a_step_that_hits_a_full_disk_fails_with_one_line(failing_disk, tmp_path, capsys):
    text, advice = failing_disk
    job = SimpleNamespace(log=[str(tmp_path / "fetch.log")], rule="fetch_data", threads=1)
    with pytest.raises(SystemExit) as stopped:
        harness.run(job, lambda snakemake: from_demo(tmp_path / "demo", 4, seed=0))
    assert stopped.value.code == 1
    console = capsys.readouterr().err
    assert "vitct: rule 'fetch_data' failed: OutputError: cannot write" in console
    assert "Covid (1).png" in console and advice in console and "Traceback" not in console
    assert not (tmp_path / "demo" / "images").exists()  # nothing partial where data would be
    assert leftovers(tmp_path) == ["fetch.log"]


def test_a_library_write_that_fails_on_a_full_disk_is_said_the_same_way(tmp_path, capsys):
    """The safety net in harness.run, for a file written by a library and not through
    atomic_files."""

    def main(snakemake):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "figure.png"))

    job = SimpleNamespace(log=[str(tmp_path / "job.log")], rule="report", threads=1)
    with pytest.raises(SystemExit):
        harness.run(job, main)
    console = capsys.readouterr().err
    assert f"cannot write '{tmp_path / 'figure.png'}': the disk holding" in console
    assert "Traceback" not in console


def test_a_zip_that_cannot_be_unpacked_on_a_full_disk_is_not_told_to_fetch_again(
    tmp_path, monkeypatch
):
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("COVID/a.png", b"x" * 5000)

    def full(self, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(Path(path) / "COVID/a.png"))

    monkeypatch.setattr(zipfile.ZipFile, "extractall", full)
    with pytest.raises(UserError) as failed:
        safe_extract(archive, tmp_path / "extracted", max_bytes=2**20)
    message = str(failed.value)
    assert "is full" in message and "(4.9 KiB needed)" in message
    assert "fetch it again" not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.zip"]


# Calls that write a file themselves, so their failures would bypass vitct.atomic_files; writing
# to the render's file object (`f`) or building text in memory is what atomic_files expects.
DIRECT_WRITES = [
    (r"\.write_text\(|\.write_bytes\(", "Path.write_text/write_bytes"),
    (r"\bsave_file\(", "safetensors save_file"),
    (r"\.to_csv\(\s*[A-Za-z_][\w.]*\s*[,)]", "DataFrame.to_csv(path)"),
    (r"\.savefig\((?!f\b)", "savefig(path)"),
    (r"np\.savez\w*\((?!f\b)", "np.savez(path)"),
    (r"torch\.save\([^,]+,\s*(?!\s|f\b)", "torch.save(obj, path)"),
    (r"(?<!torch)\.save\((?!f\b|buf\b)", "PIL save(path)"),
    (r"""open\([^)]*["'][wax]b?["']""", "open(path, 'w')"),
]


def test_every_step_writes_through_vitct_atomic_files():
    files = [*(REPO / "src/vitct").rglob("*.py"), *(REPO / "workflow/scripts").glob("*.py")]
    assert REPO / "src/vitct/training/checkpoint.py" in files  # the sub-packages are searched
    found = []
    for path in files:
        if path == REPO / "src/vitct/atomic_files.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for pattern, what in DIRECT_WRITES:
                if re.search(pattern, line) and "log_path" not in line:  # harness.run's log
                    found.append(f"{path.relative_to(REPO)}:{number}: {what}: {line.strip()}")
    assert not found, "write these through vitct.atomic_files:\n" + "\n".join(found)


def test_a_read_only_disk_names_the_target_not_the_internal_partial_file(tmp_path, monkeypatch):
    def refuse(path, data):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    def unlink(self, missing_ok=False):  # a read-only mount refuses even a missing file's unlink
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(atomic_files, "_write_file", refuse)
    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(OutputError) as failed:
        write_text(tmp_path / "out.csv", "x")
    message = str(failed.value)
    assert f"cannot write '{tmp_path / 'out.csv'}'" in message and "read-only" in message.lower()
    assert ".partial" not in message


def test_a_folder_in_the_way_is_named_not_blamed_on_the_disk(tmp_path):
    (tmp_path / "adir").mkdir()
    with pytest.raises(OutputError) as failed:
        write_text(tmp_path / "adir", "x")
    message = str(failed.value)
    assert f"'{tmp_path / 'adir'}' is a folder" in message and "Check the disk" not in message


def test_a_device_target_is_written_to_not_replaced():
    # Writing "beside and renaming" onto /dev/null would put a plain file in its place.
    write_text("/dev/null", "nothing")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
