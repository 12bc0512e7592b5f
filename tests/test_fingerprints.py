"""A data set's content digest: a replaced image changes it whatever its modification time, and
an unchanged file is not read again."""

from __future__ import annotations

import hashlib
import os
import shutil

from vitct.data import fingerprints
from vitct.data.fingerprints import content_fingerprint


def files_of(root):
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_a_file_replaced_with_an_older_time_changes_the_digest(folder, tmp_path):
    memo = tmp_path / "memo.json"
    before = content_fingerprint(folder, files_of(folder), memo)
    target, other = sorted((folder / "COVID").glob("*.png"))[:2]
    old = target.stat()
    shutil.copyfile(other, target)  # another image's bytes...
    os.utime(target, ns=(old.st_atime_ns, old.st_mtime_ns))  # ...under the old time (cp -p)
    assert target.stat().st_mtime_ns == old.st_mtime_ns
    assert content_fingerprint(folder, files_of(folder), memo) != before


def test_the_digest_keys_to_content_and_paths_not_to_times(folder, tmp_path):
    memo = tmp_path / "memo.json"
    before = content_fingerprint(folder, files_of(folder), memo)
    for path in files_of(folder):
        os.utime(path, ns=(1, 1))  # touched: times change, bytes do not
    assert content_fingerprint(folder, files_of(folder), tmp_path / "fresh.json") == before
    renamed = sorted((folder / "COVID").glob("*.png"))[0]
    renamed.rename(renamed.with_name("renamed.png"))
    assert content_fingerprint(folder, files_of(folder), memo) != before


def test_unchanged_files_are_not_read_again(folder, tmp_path, monkeypatch):
    memo = tmp_path / "memo.json"
    content_fingerprint(folder, files_of(folder), memo)
    reads = []
    real = hashlib.file_digest
    monkeypatch.setattr(
        fingerprints.hashlib, "file_digest", lambda f, name: reads.append(f.name) or real(f, name)
    )
    content_fingerprint(folder, files_of(folder), memo)
    assert reads == []
    edited = sorted((folder / "non-COVID").glob("*.png"))[0]
    edited.write_bytes(edited.read_bytes() + b"\0")
    content_fingerprint(folder, files_of(folder), memo)
    assert reads == [str(edited)]


def test_an_unwritable_memo_still_gives_the_digest(folder, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("a file where the memo's folder should be")
    digest = content_fingerprint(folder, files_of(folder), blocked / "memo.json")
    assert digest == content_fingerprint(folder, files_of(folder), tmp_path / "memo.json")
