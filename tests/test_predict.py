"""Classifying new scans: the Python API and the `vitct predict` command.

Every bad input is named in a test; each is classified beside good images, which must still get
their predictions. URLs are served by a local http.server on 127.0.0.1 only.
"""

from __future__ import annotations

import errno
import os
import re
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_MODEL, VITCT, rewrite_header, vitct
from PIL import Image

from vitct import atomic_files, cli
from vitct.data.classes import CLASS_NAMES
from vitct.data.images import MAX_IMAGE_PIXELS, load_grey
from vitct.model.artifact import ArtifactError, save_artifact
from vitct.model.input_tensors import normalise
from vitct.model.ood import Distance, Familiarity
from vitct.model.settings import ViTConfig
from vitct.model.vit import ViT
from vitct.prediction.predictor import COLUMNS, DemoModelWarning, NoFamiliarityWarning, load_model


def reference(threshold: float) -> Familiarity:
    """A familiarity reference for the tiny model's 8 features: a huge threshold flags nothing,
    a tiny one every image."""
    return Familiarity(Distance(np.zeros(8), np.eye(8), threshold), None, 0.05, 100)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    """A tiny untrained model file: fast, and enough to test everything but accuracy."""
    torch.manual_seed(0)
    model = ViT(ViTConfig(**TINY_MODEL))
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    pre = {"image_size": 16, "mean": 0.45, "std": 0.25}
    save_artifact(path, model, preprocessing=pre, familiarity=reference(1e6))
    return path


@pytest.fixture(scope="module")
def predictor(model_path):
    return load_model(model_path)


def noise_png(path: Path, size=(40, 30), seed=0) -> Path:
    """A grey noise image (noise compresses badly, so truncating it really cuts pixel data)."""
    pixels = np.random.default_rng(seed).integers(0, 256, size[::-1], dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def good(tmp_path) -> Path:
    return noise_png(tmp_path / "good.png")


def bad_error(predictor, bad, good, **kwargs) -> str:
    """Classify [good, bad, good]; check the good ones are still classified; bad's message."""
    table = predictor.predict([good, bad, good], **kwargs)
    assert list(table.columns) == COLUMNS and len(table) == 3
    assert (table.error[[0, 2]] == "").all(), table.error.tolist()
    assert table.predicted[[0, 2]].isin(CLASS_NAMES).all()
    assert table.prob_covid[[0, 2]].between(0, 1).all()
    assert table.predicted[1] == "" and np.isnan(table.prob_covid[1])
    assert table.error[1]
    return table.error[1]


# --- good inputs ------------------------------------------------------------------------------


def test_every_kind_of_input_gives_the_same_prediction_for_the_same_pixels(predictor, tmp_path):
    path = noise_png(tmp_path / "scan.png")
    pixels = np.asarray(Image.open(path))
    rgba = Image.fromarray(np.dstack([pixels] * 3 + [np.full_like(pixels, 255)]))
    table = predictor.predict([str(path), path, Image.open(path), pixels, rgba])
    assert list(table.columns) == COLUMNS
    assert (table.error == "").all()
    assert table.path.tolist()[:2] == [str(path)] * 2 and table.path[3] == "<array 3>"
    assert table.prob_covid.nunique() == 1  # one decoding path: identical probabilities
    assert table.predicted[0] == CLASS_NAMES[int(table.prob_covid[0] >= 0.5)]


def test_folder_gives_its_image_files_sorted_and_recursively(predictor, tmp_path):
    noise_png(tmp_path / "b.png", seed=1)
    noise_png(tmp_path / "a.PNG", seed=2)
    (tmp_path / "sub").mkdir()
    noise_png(tmp_path / "sub" / "c.jpg", seed=3)
    (tmp_path / "notes.txt").write_text("not a scan")  # not an image suffix: skipped
    noise_png(tmp_path / "._b.png", seed=4)  # hidden (macOS copy): skipped
    table = predictor.predict(tmp_path)
    names = [Path(p).relative_to(tmp_path).as_posix() for p in table.path]
    assert names == ["a.PNG", "b.png", "sub/c.jpg"]
    assert (table.error == "").all()


def test_empty_folder_is_reported_not_silently_skipped(predictor, tmp_path, good):
    (tmp_path / "empty").mkdir()
    assert "no image files" in bad_error(predictor, tmp_path / "empty", good)


def test_attention_overlays_are_written_per_classified_image(predictor, tmp_path, good):
    table = predictor.predict([good, tmp_path / "missing.png", good], attention_dir=tmp_path / "a")
    assert table.error[1]
    written = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert written == ["0000_good.png", "0002_good.png"]  # row number + name; none for errors
    with Image.open(tmp_path / "a" / written[0]) as img:
        assert img.format == "PNG"


# --- bad image inputs -------------------------------------------------------------------------


def test_missing_file(predictor, tmp_path, good):
    assert bad_error(predictor, tmp_path / "missing.png", good) == "file not found"


def test_non_image_file(predictor, tmp_path, good):
    fake = tmp_path / "fake.png"
    fake.write_text("this is text with an image suffix")
    assert "not an image" in bad_error(predictor, fake, good)


def test_truncated_png(predictor, tmp_path, good):
    whole = noise_png(tmp_path / "whole.png", size=(200, 200)).read_bytes()
    cut = tmp_path / "truncated.png"
    cut.write_bytes(whole[: len(whole) // 2])
    assert "truncated" in bad_error(predictor, cut, good)


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels: a decompression bomb's shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("side", [8_000, 100_000], ids=["over limit (PIL warns)", "far over"])
def test_decompression_bomb(predictor, tmp_path, good, side):
    assert side * side > MAX_IMAGE_PIXELS
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_claiming(side, side))
    assert bomb.stat().st_size < 200
    assert "decompression bomb" in bad_error(predictor, bomb, good)


def test_unusable_array(predictor, good):
    assert "array is not an image" in bad_error(predictor, np.zeros((4, 4), np.int64), good)


# --- model files ------------------------------------------------------------------------------


def test_wrong_artifact_version(model_path, tmp_path):
    old = rewrite_header(
        model_path, tmp_path / "old.safetensors", lambda meta: meta.update(format_version=1)
    )
    with pytest.raises(ArtifactError, match="v1, this vitct reads vitct-model v3: retrain"):
        load_model(old)


def test_tampered_artifact_bytes(model_path, tmp_path):
    data = bytearray(model_path.read_bytes())
    data[-3] ^= 0x40  # one bit of one weight (the tensors fill the end of the file)
    tampered = tmp_path / "tampered.safetensors"
    tampered.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="do not match the sha256 in its header"):
        load_model(tampered)


def test_tampered_checksum_in_header(model_path, tmp_path):
    forged = rewrite_header(
        model_path,
        tmp_path / "forged.safetensors",
        lambda meta: meta.update(weights_sha256="0" * 64),
    )
    with pytest.raises(ArtifactError, match="header does not match the sha256 it carries"):
        load_model(forged)


def corrupt_safetensors_header(data: bytearray) -> None:
    data[8:16] = b"#garbage"  # the JSON header starts after its 8-byte length


def corrupt_vitct_json(data: bytearray) -> None:
    start = data.index(b'"vitct":"') + len(b'"vitct":"')
    data[start : start + 2] = b"[["  # still valid safetensors, but the vitct JSON is broken


@pytest.mark.parametrize("corrupt", [corrupt_safetensors_header, corrupt_vitct_json])
def test_corrupt_header(model_path, tmp_path, corrupt):
    data = bytearray(model_path.read_bytes())
    corrupt(data)
    path = tmp_path / "corrupt.safetensors"
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="not a readable vitct model file|corrupt header"):
        load_model(path)


def test_not_a_model_file(tmp_path, good):
    with pytest.raises(ArtifactError, match="not a readable vitct model file"):
        load_model(good)
    with pytest.raises(ArtifactError, match="not a readable vitct model file"):
        load_model(tmp_path / "missing.safetensors")


# --- URLs (a local server on 127.0.0.1) ---------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    """Routes: /scan.png, /page.html, /html-as-binary, /slow.png, /huge.png, /huge-streamed.png."""

    def do_GET(self):
        png = self.server.png
        try:
            if self.path == "/slow.png":
                self.server.release.wait(10)  # longer than the client's timeout
                self.reply(png, "image/png")
            elif self.path == "/scan.png":
                self.reply(png, "image/png")
            elif self.path == "/page.html":
                self.reply(b"<html><body>Not found, sorry</body></html>", "text/html")
            elif self.path == "/html-as-binary":
                self.reply(b"<html><body>hello</body></html>", "application/octet-stream")
            elif self.path == "/huge.png":  # says how big it is up front
                self.reply(b"\0" * 50_000, "image/png")
            elif self.path == "/huge-streamed.png":  # no Content-Length: only a byte cap stops it
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.end_headers()
                for _ in range(50):
                    self.wfile.write(b"\0" * 1000)
            else:
                self.send_error(404)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up, as it should
            pass

    def reply(self, body: bytes, kind: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    png = noise_png(tmp_path_factory.mktemp("served") / "scan.png")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.png, httpd.release = png.read_bytes(), threading.Event()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    with pytest.MonkeyPatch.context() as mp:
        for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
            mp.delenv(name, raising=False)  # straight to 127.0.0.1, never through a proxy
        yield f"http://127.0.0.1:{httpd.server_address[1]}", png
    httpd.release.set()
    httpd.shutdown()
    httpd.server_close()


def test_good_url(model_path, server, good):
    base, png = server
    table = load_model(model_path).predict([f"{base}/scan.png", png])
    assert (table.error == "").all(), table.error.tolist()
    assert table.path[0] == f"{base}/scan.png"
    assert table.prob_covid[0] == table.prob_covid[1]  # same bytes, same prediction


def test_url_timeout(model_path, server, good):
    base, _ = server
    started = time.monotonic()
    error = bad_error(load_model(model_path, timeout=0.5), f"{base}/slow.png", good)
    assert error == "URL timed out after 0.5 s"
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("route", ["page.html", "html-as-binary"])
def test_url_returning_html(model_path, server, good, route):
    base, _ = server
    error = bad_error(load_model(model_path), f"{base}/{route}", good)
    if route == "page.html":  # refused on its Content-Type, before decoding
        assert error == "URL returned text/html, not an image"
    else:  # a wrong Content-Type: refused when it does not decode
        assert "not an image" in error


@pytest.mark.parametrize("route", ["huge.png", "huge-streamed.png"])
def test_url_over_size_limit(model_path, server, good, route):
    base, _ = server
    error = bad_error(load_model(model_path, max_bytes=10_000), f"{base}/{route}", good)
    assert error == "download exceeds the limit of 10000 bytes"


def test_url_http_error(model_path, server, good):
    base, _ = server
    assert "HTTP error 404" in bad_error(load_model(model_path), f"{base}/nothing.png", good)


# --- the command ------------------------------------------------------------------------------


def test_cli_exit_codes_and_csv(model_path, tmp_path, good):
    ok = vitct("predict", str(model_path), str(good))
    assert ok.returncode == 0, ok.stderr
    assert (
        ok.stdout.splitlines()[0]
        == "path,predicted,prob_covid,error,ood_score,unfamiliar,series,left_out"
    )

    out = tmp_path / "out" / "predictions.csv"
    some = vitct(
        "predict",
        str(model_path),
        str(good),
        str(tmp_path / "missing.png"),
        "-o",
        str(out),
        "--timeout",
        "2",
        "--max-bytes",
        "1000000",
    )
    assert some.returncode == 1
    assert some.stderr == "vitct: 1 of 2 inputs could not be classified (see the error column)\n"
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table.columns) == COLUMNS
    assert table.error.tolist() == ["", "file not found"]
    assert table.predicted[0] in CLASS_NAMES

    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(model_path.read_bytes()[:100])
    bad = vitct("predict", str(broken), str(good))
    assert bad.returncode == 2
    assert bad.stdout == "" and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    assert bad.stderr.startswith("vitct: ") and "not a readable vitct model file" in bad.stderr


@pytest.mark.parametrize(
    "module", ["vitct.prediction.predictor", "vitct.model.inference", "vitct.model.attention"]
)
def test_inference_does_not_import_the_training_package(module):
    code = f"import sys, {module}; print([m for m in sys.modules if m.startswith('vitct.train')])"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]", f"importing {module} imports {loaded}"  # not even vitct.training.loop


def test_predict_applies_the_same_size_policy(tmp_path):
    torch.manual_seed(0)
    model = ViT(ViTConfig(**TINY_MODEL))
    pre = {"image_size": 16, "mean": 0.4, "std": 0.2}
    save_artifact(tmp_path / "m.safetensors", model, pre, reference(1e6))
    Image.new("L", (1, 1), 128).save(tmp_path / "dot.png")
    table = load_model(tmp_path / "m.safetensors").predict(tmp_path / "dot.png")
    assert table.error[0] == "image too small: 1x1 pixels, under 16 on a side (no CT slice)"
    assert MAX_IMAGE_PIXELS == 50_000_000  # the one limit, in vitct.data.images, for both


def test_predict_warns_when_the_model_was_trained_on_demo_data(tmp_path, capsys):
    torch.manual_seed(0)
    model = ViT(ViTConfig(**TINY_MODEL))
    path = tmp_path / "demo.safetensors"
    pre = {"image_size": 16, "mean": 0.4, "std": 0.2}
    never = reference(1e6)
    save_artifact(path, model, pre, never, data={"source": "demo", "real_data": False})
    noise_png(tmp_path / "scan.png")
    with pytest.warns(DemoModelWarning, match="trained on the synthetic demo data"):
        load_model(path)
    assert cli.main(["predict", str(path), str(tmp_path / "scan.png")]) == 0
    err = capsys.readouterr().err
    assert err.startswith("vitct: warning: ") and "synthetic demo data" in err
    assert err.count("\n") == 1
    real = tmp_path / "real.safetensors"
    save_artifact(real, model, pre, never, data={"source": "local", "real_data": True})
    assert cli.main(["predict", str(real), str(tmp_path / "scan.png")]) == 0
    assert capsys.readouterr().err == ""


# --- familiarity: images unlike the training data -----------------------------------------------


def test_ood_score_comes_from_the_same_single_forward_pass(predictor, tmp_path, good, monkeypatch):
    calls = []
    encode = predictor.model.encode
    monkeypatch.setattr(predictor.model, "encode", lambda *a, **k: calls.append(1) or encode(*a))
    table = predictor.predict([good, tmp_path / "missing.png", good])
    assert len(calls) == 1  # one batch, one pass: the probabilities and the scores
    assert table.unfamiliar.dtype == "boolean"
    assert table.unfamiliar.tolist() == [False, pd.NA, False]
    x = normalise(np.array(load_grey(good, 16))[None], 0.45, 0.25)
    with torch.no_grad():
        features = predictor.model.features(x).numpy()
    expected = predictor.familiarity.score(features)[0]
    assert table.ood_score[0] == pytest.approx(expected, rel=1e-6)
    assert np.isnan(table.ood_score[1])


def test_cli_names_the_flagged_images_on_stderr(tmp_path, capsys):
    torch.manual_seed(0)
    model = ViT(ViTConfig(**TINY_MODEL))
    path = tmp_path / "strict.safetensors"
    save_artifact(path, model, {"image_size": 16, "mean": 0.4, "std": 0.2}, reference(1e-9))
    scans = [noise_png(tmp_path / f"scan{k}.png", seed=k) for k in range(5)]
    out = tmp_path / "out.csv"
    assert cli.main(["predict", str(path), *map(str, scans), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.startswith("vitct: warning: 5 of 5 images look unlike the model's training data")
    assert "unreliable" in err and "trained on one source" in err
    assert f"{scans[0]}, {scans[1]}, {scans[2]}, ..." in err and str(scans[3]) not in err
    assert err.count("\n") == 1
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table.columns) == COLUMNS and table.unfamiliar.tolist() == [True] * 5
    assert (table.ood_score > 0).all()


def test_a_model_file_without_a_reference_still_predicts_and_says_so_once(tmp_path, capsys):
    torch.manual_seed(0)
    model = ViT(ViTConfig(**TINY_MODEL))
    path = tmp_path / "old.safetensors"
    save_artifact(path, model, {"image_size": 16, "mean": 0.4, "std": 0.2})
    scans = [noise_png(tmp_path / f"scan{k}.png", seed=k) for k in range(2)]
    with pytest.warns(NoFamiliarityWarning, match="carries no familiarity reference"):
        table = load_model(path).predict(scans)
    assert (table.error == "").all() and table.prob_covid.between(0, 1).all()
    assert table.ood_score.isna().all() and table.unfamiliar.isna().all()
    out = tmp_path / "out.csv"
    assert cli.main(["predict", str(path), *map(str, scans), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "carries no familiarity reference" in err
    lines = out.read_text().splitlines()
    assert lines[0].endswith(",ood_score,unfamiliar,series,left_out") and lines[1].endswith(",,,,")


def test_a_file_url_is_read_as_the_local_path(predictor, tmp_path, good):
    (tmp_path / "scans").mkdir()
    noise_png(tmp_path / "scans" / "a.png")
    table = predictor.predict([good.as_uri(), (tmp_path / "scans").as_uri(), str(good)])
    assert (table.error == "").all(), table.error.tolist()
    assert table.path.tolist() == [good.as_uri(), str(tmp_path / "scans" / "a.png"), str(good)]
    assert table.prob_covid.nunique() == 1  # the same pixels, however they were named
    other_host = f"file://scanner.example{good}"
    assert "give the path itself" in bad_error(predictor, other_host, good)


# --- an output that cannot be written -----------------------------------------------------------


def refuse_to_load(monkeypatch) -> None:
    """An unwritable output must be found before the model is loaded (and any image decoded)."""

    def load(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(cli, "load_model", load)


def os_refuses(monkeypatch, code: int, when=lambda path: True) -> None:
    """Writes of the files `when` picks fail as the operating system would, with errno code."""
    real = atomic_files._write_file

    def write(path, data):
        if when(Path(path)):
            raise OSError(code, os.strerror(code), str(path))
        real(path, data)

    monkeypatch.setattr(atomic_files, "_write_file", write)


def one_line(err: str) -> str:
    assert err.count("\n") == 1 and err.startswith("vitct: "), err
    assert "Traceback" not in err and ".partial" not in err, err
    return err


# (option, target, errno the disk answers with or None, what the message must say)
UNWRITABLE = {
    "-o an existing folder": ("-o", "{tmp}/adir", None, "is a folder: name a file for -o"),
    "-o under a file": ("-o", "/proc/version/out.csv", None, "'/proc/version' is a file"),
    "-o in a folder that refuses": ("-o", "{tmp}/out.csv", errno.EACCES, "write elsewhere"),
    "-o on a read-only disk": ("-o", "{tmp}/new/out.csv", errno.EROFS, "read-only file system"),
    "--attention an existing file": ("--attention", "{tmp}/good.png", None, "is a file, not a"),
    "--attention under a file": ("--attention", "/proc/version/overlays", None, "is a file"),
    "--attention on a read-only disk": ("--attention", "{tmp}/a", errno.EROFS, "write elsewhere"),
}


@pytest.mark.parametrize("case", UNWRITABLE)
def test_an_unwritable_output_is_refused_before_any_work(
    case, model_path, tmp_path, good, monkeypatch, capsys
):
    option, target, code, said = UNWRITABLE[case]
    target = target.format(tmp=tmp_path)
    (tmp_path / "adir").mkdir()
    refuse_to_load(monkeypatch)
    if code is not None:
        os_refuses(monkeypatch, code)
    assert cli.main(["predict", str(model_path), str(good), option, target]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    what = "the attention overlays to " if option == "--attention" else ""
    assert one_line(err).startswith(f"vitct: cannot write {what}'{target}'") and said in err, err
    assert "Check the disk" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "good.png"]  # nothing made


def test_an_existing_folder_as_output_is_one_line_and_exit_2(model_path, tmp_path, good):
    (tmp_path / "adir").mkdir()
    run = vitct("predict", str(model_path), str(good), "-o", str(tmp_path / "adir"))
    assert run.returncode == 2, run.stderr
    assert one_line(run.stderr) == (
        f"vitct: cannot write '{tmp_path / 'adir'}': it is a folder: name a file for -o "
        f"(e.g. '{tmp_path / 'adir' / 'predictions.csv'}') and run again.\n"
    )


LATE = {  # errno: what the message must say (the cause, and advice that fits it)
    errno.ENOSPC: ("is full", "free some space"),
    errno.EACCES: ("permission denied", "write elsewhere"),
    errno.EROFS: ("read-only file system", "write elsewhere"),
}


@pytest.mark.parametrize("code", LATE, ids=[errno.errorcode[c] for c in LATE])
def test_predictions_are_kept_when_the_csv_cannot_be_written_at_the_end(
    code, model_path, tmp_path, good, monkeypatch, capsys
):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    os_refuses(monkeypatch, code, when=lambda path: "out.csv" in path.name)  # not the check
    out = tmp_path / "out.csv"
    argv = ["predict", str(model_path), str(good), str(tmp_path / "missing.png"), "-o", str(out)]
    assert cli.main(argv) == 3  # not 1: the output failed, whatever the inputs did
    stdout, err = capsys.readouterr()
    assert stdout == "" and "Traceback" not in err and ".partial" not in err
    line = next(x for x in err.splitlines() if x.startswith("vitct: cannot write"))
    cause, advice = LATE[code]
    assert f"'{out}'" in line and cause in line.lower() and advice in line.lower(), line
    kept = Path(re.search(r"the predictions are kept in '([^']+)'", line).group(1))
    assert kept.parent.parent == tmp_path / "tmp"
    table = pd.read_csv(kept, keep_default_na=False)
    assert list(table.columns) == COLUMNS and table.error.tolist() == ["", "file not found"]
    assert "1 of 2 inputs could not be classified" in err  # still said
    assert not out.exists()


def test_the_csv_is_kept_when_the_overlays_cannot_be_written_at_the_end(
    model_path, tmp_path, good, monkeypatch, capsys
):
    os_refuses(monkeypatch, errno.ENOSPC, when=lambda path: path.name.endswith(".png.partial"))
    out, overlays = tmp_path / "out.csv", tmp_path / "overlays"
    argv = ["predict", str(model_path), str(good), "-o", str(out), "--attention", str(overlays)]
    assert cli.main(argv) == 3
    err = one_line(capsys.readouterr().err)
    assert err.startswith(f"vitct: cannot write the attention overlays to '{overlays}'")
    assert "is full" in err and "free some space" in err.lower()
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table.columns) == COLUMNS and table.error.tolist() == [""]


# --- as a viewer shows it, and content that is no CT slice (vitct.data.images, .content) -------


def test_predict_reads_a_sideways_jpeg_as_a_viewer_shows_it(predictor, tmp_path):
    from odd_images import sideways, slice_pixels

    jpeg = sideways(tmp_path / "sideways.jpg", slice_pixels(), quality=95)
    stored = np.asarray(Image.open(jpeg).convert("L"))  # 48 wide, 64 high: on its side
    upright = np.ascontiguousarray(np.rot90(stored, -1))
    table = predictor.predict([jpeg, Image.open(jpeg), upright, stored])
    assert (table.error == "").all()
    assert table.prob_covid[0] == table.prob_covid[1] == table.prob_covid[2]  # file, PIL, array
    assert table.prob_covid[0] != table.prob_covid[3]  # not the sideways pixels


def test_predict_refuses_content_that_is_no_ct_slice(predictor, model_path, tmp_path, good, capsys):
    from odd_images import NOT_A_SLICE, not_a_slice

    for kind, reason in NOT_A_SLICE.items():
        not_a_slice(kind).save(tmp_path / f"{kind}.png")
        assert bad_error(predictor, tmp_path / f"{kind}.png", good).startswith(reason)
    noise = np.asarray(not_a_slice("colour noise"))  # an array takes the same path
    assert bad_error(predictor, noise, good).startswith("colour image")
    args = ["predict", str(model_path), str(good), str(tmp_path / "strip.png")]
    assert cli.main([*args, "-o", str(tmp_path / "out.csv")]) == 1
    assert "1 of 2 inputs could not be classified" in capsys.readouterr().err


def test_predict_applies_the_transparency_and_frames_policy(predictor, tmp_path, good):
    from odd_images import frames, transparent

    from vitct.data.images import ImageWarning

    mostly, _ = transparent(tmp_path / "mostly.png", 0.6)
    assert bad_error(predictor, mostly, good).startswith("mostly transparent (60% of pixels): ")
    assert bad_error(predictor, frames(tmp_path / "stack.tif", 2), good).startswith("2 frames (")
    part, shown = transparent(tmp_path / "part.png", 0.2)
    with pytest.warns(ImageWarning, match=r"part\.png: partly transparent \(20% of pixels"):
        table = predictor.predict([part, shown])
    assert (table.error == "").all()
    assert table.prob_covid[0] == table.prob_covid[1]  # the slice a viewer shows


def test_predictions_are_kept_when_stdout_cannot_be_written(model_path, tmp_path, good):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    with open("/dev/full", "w") as full:  # every write: "No space left on device"
        run = subprocess.run(
            [str(VITCT), "predict", str(model_path), str(good)],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            timeout=300,
        )
    assert run.returncode == 3, run.stderr
    line = one_line(run.stderr)
    assert line.startswith("vitct: cannot write to stdout: No space left on device;")
    kept = Path(re.search(r"the predictions are kept in '([^']+)'", line).group(1))
    assert kept.parent.parent == tmp_path
    assert list(pd.read_csv(kept).columns) == COLUMNS


def test_predictions_go_to_stdout_when_no_temporary_folder_can_hold_them(
    model_path, tmp_path, good, monkeypatch, capsys
):
    monkeypatch.setattr(tempfile, "tempdir", "/proc/version")  # a file: no folder in it
    os_refuses(monkeypatch, errno.ENOSPC, when=lambda path: "out.csv" in path.name)
    assert cli.main(["predict", str(model_path), str(good), "-o", str(tmp_path / "out.csv")]) == 3
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == ",".join(COLUMNS) and len(out.splitlines()) == 2
    assert one_line(err).endswith("; the predictions were written to stdout instead\n")
