"""A data set's content as one digest, so that a replaced image reruns what depends on it
whatever its modification time (`cp -p`, `rsync -a` and unpacking an older archive keep the old
time, which Snakemake's own check, "an input newer than its outputs", misses).

Every file is read once: its digest is remembered, keyed by its size, times and inode, and read
again only when one of those changes. A replacement always changes the inode or the change
time (ctime), which no copy tool can set back.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from vitct.atomic_files import OutputError, write_text


def _key(stat: os.stat_result) -> list:
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]


def content_fingerprint(root: Path, files: list[Path], memo: Path) -> str:
    """sha256 over every file's path (relative to `root`) and content; `memo` (a JSON file,
    written atomically) remembers each file's digest between calls."""
    try:
        known = json.loads(memo.read_text())
    except (OSError, ValueError):
        known = {}
    seen, digest = {}, hashlib.sha256()
    for path in sorted(files):
        name = str(path.relative_to(root)) if path != root else path.name
        key = _key(path.stat())
        entry = known.get(name)
        if entry is None or entry["key"] != key:
            with open(path, "rb") as f:
                entry = {"key": key, "sha256": hashlib.file_digest(f, "sha256").hexdigest()}
        seen[name] = entry
        digest.update(f"{name}\0{entry['sha256']}\n".encode())
    if seen != known:
        try:
            write_text(memo, json.dumps(seen))
        except OutputError:  # a read-only results folder: the digest is still right, only slower
            pass
    return digest.hexdigest()
