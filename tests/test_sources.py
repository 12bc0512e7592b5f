"""Data sources, unit level: safe zip extraction, finding the class folders, and the Kaggle
download through a stand-in CLI (tests/fakes/kaggle_cli.py) that prints what the real one does.

One test holds the stand-in to the real kaggle CLI: the CLI can only be pointed at
http://localhost (KAGGLE_API_ENVIRONMENT=LOCALHOST, port 80), so a fake Kaggle API is served on
127.0.0.1:80 there, and the test skips where that port cannot be bound.
"""

from __future__ import annotations

import base64
import importlib.metadata
import io
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import (
    KAGGLE_STAND_IN,
    put_kaggle_stand_in_on_path,
)
from PIL import Image

from vitct.data.classes import CLASS_DIRS
from vitct.data.sources import (
    _redact,
    explain_kaggle_failure,
    find_class_root,
    from_demo,
    from_kaggle,
    from_local,
    safe_extract,
)
from vitct.errors import UserError

SLUG = "plameneduardo/sarscov2-ctscan-dataset"


STAND_IN = KAGGLE_STAND_IN


KEY = "k3y-that-must-never-be-printed-0123456789"


MB = 2**20


def png(value: int = 128) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (8, 8), value).save(buf, "PNG")
    return buf.getvalue()


def dataset_zip(path: Path, prefix: str = "", per_class: int = 3, classes=CLASS_DIRS) -> Path:
    """A zip in the Kaggle layout: the class folders at the top, or under prefix."""
    with zipfile.ZipFile(path, "w") as zf:
        for c in classes:
            for i in range(per_class):
                zf.writestr(f"{prefix}{c}/{c} ({i}).png", png(40 * i))
    return path


def leftovers(parent: Path) -> list[str]:
    """What an extraction left beside its target."""
    if not parent.exists():
        return []
    return sorted(
        p.name
        for p in parent.iterdir()
        if p.name in ("extracted", "download") or p.name.startswith(".partial-")
    )


# --- safe_extract -------------------------------------------------------------------------


def _link(zf: zipfile.ZipFile) -> None:
    info = zipfile.ZipInfo("COVID/link.png")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    zf.writestr(info, "/etc/passwd")


UNSAFE = {
    "absolute path": (lambda zf: zf.writestr("/tmp/evil.png", b"x"), "escapes the folder"),
    "parent entry": (lambda zf: zf.writestr("../evil.png", b"x"), "escapes the folder"),
    "nested parent": (lambda zf: zf.writestr("COVID/../../evil.png", b"x"), "escapes the folder"),
    "backslash parent": (lambda zf: zf.writestr("COVID\\..\\..\\evil.png", b"x"), "escapes"),
    "symlink": (_link, "is a link"),
}


@pytest.mark.parametrize("case", UNSAFE)
def test_safe_extract_refuses_unsafe_entries(case, tmp_path):
    add_entry, message = UNSAFE[case]
    archive = dataset_zip(tmp_path / "data.zip")
    with zipfile.ZipFile(archive, "a") as zf:
        add_entry(zf)
    work = tmp_path / "work"
    with pytest.raises(UserError, match=message):
        safe_extract(archive, work / "extracted", 100 * MB)
    assert leftovers(work) == []
    assert not (tmp_path / "evil.png").exists()


def test_safe_extract_refuses_archives_over_the_limit(tmp_path):
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("COVID/zeros.png", bytes(3 * MB))  # compresses to a few KiB
    work = tmp_path / "work"
    with pytest.raises(UserError, match=r"expand to 3 MiB.*dataset\.max_extract_mb \(2 MiB\)"):
        safe_extract(archive, work / "extracted", 2 * MB)
    assert leftovers(work) == []


def test_safe_extract_leaves_nothing_when_a_member_is_corrupt(tmp_path):
    archive = tmp_path / "corrupt.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("COVID/a.png", b"A" * 1000)
        zf.writestr("non-COVID/b.png", b"B" * 1000)
    data = archive.read_bytes()
    archive.write_bytes(data.replace(b"B" * 1000, b"B" * 999 + b"C"))  # CRC no longer matches
    work = tmp_path / "work"
    (work / "extracted").mkdir(parents=True)
    (work / "extracted" / "stale.png").write_bytes(b"from an earlier archive")
    with pytest.raises(UserError, match="could not unpack.*Bad CRC-32"):
        safe_extract(archive, work / "extracted", 100 * MB)
    assert leftovers(work) == []  # no partial copy, and the stale one is gone too


@pytest.mark.parametrize("kind", ["cut", "not a zip"])
def test_safe_extract_rejects_unreadable_archives(kind, tmp_path):
    archive = dataset_zip(tmp_path / "data.zip")
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2] if kind == "cut" else b"<html>sign in</html>")
    work = tmp_path / "work"
    with pytest.raises(UserError, match="not a readable zip.*truncated"):
        safe_extract(archive, work / "extracted", 100 * MB)
    assert leftovers(work) == []


def test_safe_extract_unpacks_into_place(tmp_path):
    archive = dataset_zip(tmp_path / "data.zip")
    work = tmp_path / "work"
    safe_extract(archive, work / "extracted", 100 * MB)
    assert leftovers(work) == ["extracted"]
    assert sorted(p.name for p in (work / "extracted" / "COVID").iterdir()) == [
        "COVID (0).png",
        "COVID (1).png",
        "COVID (2).png",
    ]


# --- find_class_root and from_local -------------------------------------------------------


def make_tree(root: Path, *folders: str) -> Path:
    for folder in folders:
        (root / folder).mkdir(parents=True)
        (root / folder / "a.png").write_bytes(png())
    return root


def test_find_class_root_at_the_top(tmp_path):
    assert find_class_root(make_tree(tmp_path, "COVID", "non-COVID")) == tmp_path


def test_find_class_root_below_a_nesting_folder(tmp_path):
    make_tree(tmp_path, "sarscov2/COVID", "sarscov2/non-COVID")
    assert find_class_root(tmp_path) == tmp_path / "sarscov2"


def test_find_class_root_skips_the_macos_shadow_tree(tmp_path):
    # "__MACOSX" sorts before "sarscov2": by name alone the shadow copy would be taken.
    make_tree(tmp_path, "__MACOSX/sarscov2/COVID", "__MACOSX/sarscov2/non-COVID")
    make_tree(tmp_path, "sarscov2/COVID", "sarscov2/non-COVID")
    assert find_class_root(tmp_path) == tmp_path / "sarscov2"


def nothing_in(work: Path) -> bool:
    """The work folder holds no file or folder (an empty or absent one is fine)."""
    return not work.exists() or not any(work.iterdir())


def test_a_zip_with_a_class_missing_names_it(tmp_path):
    archive = dataset_zip(tmp_path / "data.zip", prefix="sarscov2/", classes=["COVID"])
    work = tmp_path / "work"
    with pytest.raises(UserError, match=r"missing: non-COVID \(folders seen: \['COVID', 'sars"):
        from_local(str(archive), work, 100 * MB)
    assert nothing_in(work)


def nested_zip(path: Path) -> Path:
    """A zip that holds the dataset zip (a download of a download), not the class folders."""
    inner = dataset_zip(path.with_name("sarscov2-ctscan-dataset.zip"))
    with zipfile.ZipFile(path, "w") as zf:
        zf.write(inner, "download/sarscov2-ctscan-dataset.zip")
        zf.writestr("download/README.txt", "the data is in the zip")
    inner.unlink()
    return path


def test_a_zip_inside_the_zip_is_named_and_nothing_is_left(tmp_path):
    archive = nested_zip(tmp_path / "data.zip")
    work = tmp_path / "work"
    with pytest.raises(UserError) as failed:
        from_local(str(archive), work, 100 * MB)
    message = str(failed.value)
    assert f"'{archive}' holds another archive" in message
    assert "'download/sarscov2-ctscan-dataset.zip'" in message
    assert "unpack" in message and "point dataset.path at" in message
    assert str(work) not in message  # the internal folder means nothing to the user
    assert nothing_in(work)


def test_a_kaggle_zip_inside_the_zip_leaves_nothing(stand_in, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_KAGGLE_ZIP", str(nested_zip(tmp_path / "served-nested.zip")))
    work = tmp_path / "work"
    with pytest.raises(UserError, match="holds another archive.*sarscov2-ctscan-dataset.zip"):
        from_kaggle(SLUG, work, 100 * MB)
    assert nothing_in(work)


@pytest.mark.parametrize("prefix", ["", "sarscov2-ctscan-dataset/"])
def test_from_local_zip(prefix, tmp_path):
    archive = dataset_zip(tmp_path / "data.zip", prefix=prefix)
    root = from_local(str(archive), tmp_path / "work", 100 * MB)
    assert root == tmp_path / "work" / "extracted" / prefix.rstrip("/")
    assert all(len(list((root / c).iterdir())) == 3 for c in CLASS_DIRS)


def test_from_local_folder_is_used_in_place(tmp_path):
    make_tree(tmp_path / "data", "nest/COVID", "nest/non-COVID")
    assert from_local(str(tmp_path / "data"), tmp_path / "work", MB) == tmp_path / "data" / "nest"
    assert not (tmp_path / "work").exists()


BAD_PATHS = {  # what dataset.path holds: what the message must say
    "missing": (None, "does not exist"),
    "not an archive": (b"\x1f\x8b not a zip", "neither a folder nor a zip"),
    "empty": (b"", r"is empty \(0 bytes\).*fetch it again"),
    "cut zip": ("half", r"not a readable zip.*truncated: fetch it again"),
}


@pytest.mark.parametrize("kind", BAD_PATHS)
def test_from_local_bad_path(kind, tmp_path):
    content, message = BAD_PATHS[kind]
    path = tmp_path / "data.zip"
    if content == "half":
        whole = dataset_zip(tmp_path / "whole.zip").read_bytes()
        content = whole[: len(whole) // 2]
    if content is not None:
        path.write_bytes(content)
    work = tmp_path / "work"
    with pytest.raises(UserError, match=message):
        from_local(str(path), work, MB)
    assert nothing_in(work)


# --- Kaggle through the stand-in CLI ------------------------------------------------------


@pytest.fixture
def kaggle_env(tmp_path, monkeypatch):
    """No credentials anywhere the CLI looks (own HOME, no KAGGLE_* variables)."""
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in list(os.environ):
        if var.startswith("KAGGLE_") or var in ("VERBOSE", "VERBOSE_OUTPUT", "XDG_CONFIG_HOME"):
            monkeypatch.delenv(var)


@pytest.fixture
def stand_in(tmp_path, monkeypatch, kaggle_env):
    """The stand-in first on PATH as `kaggle`, serving a small dataset zip; FAKE_KAGGLE picks
    the outcome."""
    put_kaggle_stand_in_on_path(tmp_path, monkeypatch)
    monkeypatch.setenv("FAKE_KAGGLE_ZIP", str(dataset_zip(tmp_path / "served.zip")))
    monkeypatch.setenv("FAKE_KAGGLE", "ok")


def test_kaggle_download(stand_in, tmp_path, caplog):
    work = tmp_path / "work"
    with caplog.at_level(logging.INFO):
        root = from_kaggle(SLUG, work, 100 * MB)
    assert "100%|" in caplog.text and " 0%|" not in caplog.text  # progress: last state only
    assert root == work / "extracted"
    assert all(len(list((root / c).iterdir())) == 3 for c in CLASS_DIRS)
    assert leftovers(work) == ["extracted"]  # the downloaded zip is not kept


REJECTED = {"KAGGLE_USERNAME": "someone", "KAGGLE_KEY": KEY}


KAGGLE_FAILURES = {
    "no credentials": ("auth", {}, "Kaggle asks for credentials and none are set"),
    "rejected credentials": ("auth", REJECTED, "Kaggle rejected the credentials"),
    "rejected token": ("auth", {"KAGGLE_API_TOKEN": KEY}, "Kaggle rejected the credentials"),
    "no network": ("offline", {}, "Kaggle cannot be reached"),
    "no such dataset": ("missing", {}, f"Kaggle has no dataset '{SLUG}'"),
    "cut zip": ("cut", {}, "is not a readable zip"),
    "broken connection": ("broken", {}, "cut off before it completed"),
}


@pytest.mark.parametrize("case", KAGGLE_FAILURES)
def test_kaggle_failures(case, stand_in, tmp_path, monkeypatch, caplog):
    mode, env, message = KAGGLE_FAILURES[case]
    monkeypatch.setenv("FAKE_KAGGLE", mode)
    monkeypatch.setenv("VERBOSE", "1")  # makes the real CLI dump its credentials
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    work = tmp_path / "work"
    with caplog.at_level(logging.INFO), pytest.raises(UserError) as error:
        from_kaggle(SLUG, work, 100 * MB)
    assert message in str(error.value)
    assert "in a browser" in str(error.value) or mode == "cut"  # the way around Kaggle
    assert leftovers(work) == []
    assert "kaggle CLI exit" in caplog.text
    for secret in (KEY, base64.b64encode(f"someone:{KEY}".encode()).decode()):
        assert secret not in caplog.text and secret not in str(error.value)


def test_credentials_in_a_file_count_as_given(stand_in, tmp_path, monkeypatch):
    (tmp_path / "home" / ".kaggle").mkdir()
    (tmp_path / "home" / ".kaggle" / "access_token").write_text(KEY)
    monkeypatch.setenv("FAKE_KAGGLE", "auth")
    with pytest.raises(UserError, match="Kaggle rejected the credentials"):
        from_kaggle(SLUG, tmp_path / "work", 100 * MB)


def test_kaggle_cli_not_installed(kaggle_env, tmp_path):
    with pytest.raises(UserError, match="'no-such-kaggle' is not installed: pip install kaggle"):
        from_kaggle(SLUG, tmp_path / "work", MB, cli="no-such-kaggle")


# What the real CLI prints in cases the stand-in does not play (recorded from kaggle 2.2.5,
# 1.x where noted).
REFUSED = (
    "HTTPConnectionPool(host='localhost', port=80): Max retries exceeded with url: /api/v1/"
    'datasets.DatasetApiService/GetDatasetMetadata (Caused by NewConnectionError("HTTPConnection'
    "(host='localhost', port=80): Failed to establish a new connection: [Errno 111] Connection "
    'refused"))'
)


TOKEN_OFFLINE = (
    "Traceback (most recent call last):\n  ...\nrequests.exceptions.ConnectionError: "
    "HTTPSConnectionPool(host='api.kaggle.com', port=443): Max retries exceeded with url: "
    "/v1/security.OAuthService/IntrospectToken (Caused by NameResolutionError(...))"
)


TOKEN_REJECTED = (
    "Traceback (most recent call last):\n  ...\nrequests.exceptions.HTTPError: Unauthenticated"
)


FORBIDDEN = (
    "403 Client Error: Forbidden for url: https://api.kaggle.com/v1/datasets.DatasetApiService/"
    "DownloadDataset\n\nYou don't have access to this resource.\nIf this is a competition, you "
    "may need to accept its rules first at\n  https://www.kaggle.com/competitions/<competition>/rules"
)


RECORDED = {
    "connection refused": (REFUSED, "Kaggle cannot be reached"),
    "token, no network": (TOKEN_OFFLINE, "Kaggle cannot be reached"),
    "forbidden": (FORBIDDEN, f"Kaggle refused access to {SLUG}"),
    "rate limit": ("429 Client Error\n\nYou have been rate limited. Wait a little", "rate-limited"),
    "server error": ("503 Server Error: x\n\nThis is a problem on Kaggle's side, not", "server"),
    "1.x, no kaggle.json": (
        "OSError: Could not find kaggle.json. Make sure it's located in /root/.kaggle. Or use "
        "the environment method. See setup instructions at https://github.com/Kaggle/kaggle-api/",
        "Kaggle asks for credentials",
    ),
    "1.x without six": ("ModuleNotFoundError: No module named 'six'", "pip install six"),
    "disk full": ("OSError: [Errno 28] No space left on device", "the disk is full"),
    "anything else": ("something new\nValueError: odd", "failed (ValueError: odd)"),
}


@pytest.mark.parametrize("case", RECORDED)
def test_explain_recorded_cli_texts(case, kaggle_env):
    output, message = RECORDED[case]
    assert message in explain_kaggle_failure(output, SLUG)


def test_a_rejected_token_is_named(kaggle_env, monkeypatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", KEY)
    assert "Kaggle rejected the credentials" in explain_kaggle_failure(TOKEN_REJECTED, SLUG)


def test_redact_hides_credentials_the_cli_might_print(monkeypatch):
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    basic = base64.b64encode(f"someone:{KEY}".encode()).decode()
    text = _redact(
        f"Authorization: Basic {basic}\nbody {{'key': '{KEY}'}}\nAuthorization: Bearer x"
    )
    assert KEY not in text and basic not in text and "Bearer x" not in text
    assert text.count("***") == 3


# --- the stand-in against the real CLI ----------------------------------------------------


class FakeKaggleApi(BaseHTTPRequestHandler):
    """Answers the real CLI's calls as Kaggle would, for one outcome (`mode`)."""

    mode = "ok"
    zip_bytes = b""
    authorizations: list = []

    def log_message(self, *args):
        pass

    def reply(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.authorizations.append(self.headers.get("Authorization"))
        if self.mode == "auth":
            body = json.dumps({"code": 401, "message": "Unauthenticated"}).encode()
            return self.reply(401, body, "application/json")
        if self.mode == "missing":
            return self.reply(404, b"", "text/plain")
        if self.path.endswith("/GetDatasetMetadata"):
            body = json.dumps({"info": {"licenses": [{"name": "CC-BY-NC-SA-4.0"}]}}).encode()
            return self.reply(200, body, "application/json")
        # The download answers with a redirect to the file in storage, as Kaggle's does.
        self.send_response(302)
        self.send_header("Location", "/storage/dataset.zip")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        data = self.zip_bytes[: len(self.zip_bytes) // 2] if self.mode == "cut" else self.zip_bytes
        self.reply(200, data, "application/zip")


@pytest.fixture
def real_kaggle() -> str:
    cli = Path(sys.executable).with_name("kaggle")
    cli = str(cli) if cli.exists() else shutil.which("kaggle")
    try:
        version = importlib.metadata.version("kaggle")
    except importlib.metadata.PackageNotFoundError:
        version = None
    if cli is None or version is None or int(version.split(".")[0]) < 2:
        pytest.skip(f"needs the kaggle 2.x CLI (found {version}): pip install kaggle six")
    return cli


def serve_fake_api(mode: str, zip_bytes: bytes) -> tuple[ThreadingHTTPServer, list]:
    authorizations = []
    handler = type(
        "Handler",
        (FakeKaggleApi,),
        {"mode": mode, "zip_bytes": zip_bytes, "authorizations": authorizations},
    )
    try:
        server = ThreadingHTTPServer(("127.0.0.1", 80), handler)
    except OSError as e:
        pytest.skip(
            f"cannot serve a fake Kaggle API on 127.0.0.1:80, the only address the real "
            f"CLI can be pointed at (KAGGLE_API_ENVIRONMENT=LOCALHOST): {e}"
        )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, authorizations


def normalised(proc: subprocess.CompletedProcess, out: Path) -> tuple:
    """Exit code, stdout, stderr (without progress bars) and the files written."""

    def clean(data: bytes) -> str:
        lines = data.decode().replace(str(out), "OUT").split("\n")
        return "\n".join(line for line in lines if "%|" not in line)

    files = {p.name: p.read_bytes() for p in out.iterdir()} if out.exists() else None
    return proc.returncode, clean(proc.stdout), clean(proc.stderr), files


CONTRACT = {
    "ok": ("ok", {}),
    "cut": ("cut", {}),
    "no credentials": ("auth", {}),
    "rejected credentials": ("auth", REJECTED),
    "no such dataset": ("missing", {}),
}


@pytest.mark.parametrize("case", CONTRACT)
def test_stand_in_prints_what_the_real_cli_prints(case, real_kaggle, kaggle_env, tmp_path):
    mode, credentials = CONTRACT[case]
    served = dataset_zip(tmp_path / "served.zip")
    server, authorizations = serve_fake_api(mode, served.read_bytes())
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(
        credentials,
        KAGGLE_API_ENVIRONMENT="LOCALHOST",
        FAKE_KAGGLE=mode,
        FAKE_KAGGLE_ZIP=str(served),
        # Anything not for localhost goes to a closed local port: never to the internet.
        https_proxy="http://127.0.0.1:9",
        HTTPS_PROXY="http://127.0.0.1:9",
    )
    results = {}
    try:
        for name, cli in (("real", [real_kaggle]), ("stand-in", [sys.executable, STAND_IN])):
            out = tmp_path / name
            cmd = [*map(str, cli), "datasets", "download", "-d", SLUG, "-p", str(out), "--force"]
            proc = subprocess.run(cmd, capture_output=True, env=env, timeout=120)
            results[name] = normalised(proc, out)
    finally:
        server.shutdown()
        server.server_close()
    assert results["real"] == results["stand-in"]
    assert authorizations, "the real CLI never reached the fake API"
    if credentials:  # they reached Kaggle, which turned them down
        expected = base64.b64encode(f"someone:{KEY}".encode()).decode()
        assert authorizations == [f"Basic {expected}"]


def test_the_demo_folder_is_rebuilt_from_nothing_when_its_settings_change(tmp_path):
    root = from_demo(tmp_path, 6, seed=1)
    first = (root / "COVID" / "Covid (1).png").read_bytes()
    root = from_demo(tmp_path, 4, seed=2)
    for class_dir in ("COVID", "non-COVID"):
        assert len(list((root / class_dir).iterdir())) == 4  # none of the earlier six kept
    assert (root / "COVID" / "Covid (1).png").read_bytes() != first  # the new seed's
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]  # no partial folder left
