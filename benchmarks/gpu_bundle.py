"""What benchmarks/gpu_pipeline.sh needs on a bare GPU machine without network, in parts that fit
a small carry (64 MiB): the wheels the pipeline needs besides torch, and the preprocessed data.

    python benchmarks/gpu_bundle.py make --data /work/shared/data/sarscov2-ct \
        [--configfile config/config.yaml] [--out benchmarks/gpu_bundle] [--part-mib 60] \
        [--skip numpy scipy ...] [--no-wheels] [--with-timm]
    python benchmarks/gpu_bundle.py unpack [--bundle benchmarks/gpu_bundle]   # on the device

`make` runs the pipeline's own data steps (fetch_data, build_manifest, and preprocess for every
cache a run of the config reads: every data set, the training source `dataset` and each
external set, at every image size, mask and intensity) on the raw images in a scratch folder,
so the cache is exactly what the pipeline makes; packs results/data/SET/{source.json,
manifest.tsv, rejects.tsv, images_*.npz} (xz) with a record of where they came from, adds a
wheelhouse (`pip wheel` of the project's dependencies without torch: what is already
installed on the device is not reinstalled), and cuts the whole into parts of at most
--part-mib, listed with their checksums in MANIFEST.json. The raw 1,957 images (187 MB) do not
fit a 64 MiB carry; the cache does not either (config/config.yaml's, measured before the
workflow's redesign: 83 MB packed), so it travels in parts over several calls of the device
tool.

`describe dataset|origin` prints the unpacked cache's dataset (as a --config value) or where it
came from. `unpack` gathers the parts carried so far into results/gpu_bundle/parts (kept
between calls of a warm machine), says which are still missing, and once all are there, checks
them, unpacks the wheels to results/gpu_bundle/payload/wheels and the cache into results/data
with fresh times in the order of the pipeline's steps (so Snakemake sees it up to date and
starts at the partition), and writes results/data/from_cache.json, which the run reports.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASET = "dataset"  # the training source's folder under results/data (vitct.pipeline.plan)
MANIFEST = "MANIFEST.json"
CACHE_RECORD = "from_cache.json"
# The files of the pipeline's data steps in each data set's folder (results/data/SET/), in the
# order the steps make them (their times must follow that order for Snakemake to call them up to
# date): fetch_data, build_manifest, preprocess.
FIRST = ("source.json",)
SECOND = ("manifest.tsv", "rejects.tsv")
LAST_PATTERN = r"images_\d+px_[a-z]+_[a-z]+\.npz"
SET_PATTERN = r"[A-Za-z0-9_-]+"  # a data set's folder name (the Snakefile's `set` wildcard)
DATA_RULES = ("fetch_data", "build_manifest", "preprocess")


class BundleError(Exception):
    """A bundle that cannot be made or used, with what to do about it."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def snakemake_command(workdir: Path, configfile: Path, data: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(ROOT / "Snakefile"),
        "-d",
        str(workdir),
        "--configfile",
        str(configfile),
        "--config",
        f"dataset={{source: local, path: {data}}}",
    ]


def data_targets(dry_run_output: str) -> list[str]:
    """The data files (paths under results/data) a dry run of the whole pipeline plans to make:
    every data set's receipt, manifest and rejects, and every cache a run reads."""
    found = re.findall(rf"results/data/({SET_PATTERN})/({LAST_PATTERN})", dry_run_output)
    if not found:
        raise BundleError("the dry run plans no preprocess job: is the config's pipeline empty?")
    sets = sorted({data_set for data_set, _ in found})
    caches = sorted({f"{data_set}/{name}" for data_set, name in found})
    steps = [f"{data_set}/{name}" for data_set in sets for name in (*FIRST, *SECOND)]
    return [*steps, *caches]


def step_order(name: str) -> int:
    """Which data step made a file (a path under results/data): 0 fetch_data, 1 build_manifest,
    2 preprocess; a BundleError for any other file."""
    data_set, _, base = name.partition("/")
    if re.fullmatch(SET_PATTERN, data_set) and "/" not in base:
        if base in FIRST:
            return 0
        if base in SECOND:
            return 1
        if re.fullmatch(LAST_PATTERN, base):
            return 2
    raise BundleError(
        f"{name} in the cache is not a file of the pipeline's data steps "
        f"({', '.join(DATA_RULES)}: results/data/SET/...)"
    )


def make_cache(data: str, configfile: Path, scratch: Path, cores: int) -> tuple[Path, dict]:
    """Run the data steps on `data`; (folder holding the files, record of what they are)."""
    command = snakemake_command(scratch, configfile, data)
    dry = subprocess.run([*command, "-n"], capture_output=True, text=True)
    if dry.returncode:
        raise BundleError(f"the dry run failed:\n{dry.stdout[-3000:]}{dry.stderr[-3000:]}")
    files = data_targets(dry.stdout + dry.stderr)
    # rejects.tsv comes with its manifest.tsv (one job)
    targets = [f"results/data/{name}" for name in files if not name.endswith("/rejects.tsv")]
    subprocess.run([*command, "--cores", str(cores), *targets], check=True)
    folder = scratch / "results" / "data"
    receipt = json.loads((folder / DATASET / "source.json").read_text())
    configfile = configfile.resolve()
    record = {
        "made": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": data,
        "configfile": str(
            configfile.relative_to(ROOT) if configfile.is_relative_to(ROOT) else configfile
        ),
        "counts": receipt["counts"],
        "commit": git_commit(),
        "uncommitted_changes": uncommitted_changes(),
        "files": {name: sha256_of(folder / name) for name in files},
    }
    return folder, record


def git_commit() -> str:
    run = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True)
    return run.stdout.decode().strip() or "unknown"


def uncommitted_changes() -> bool | None:
    """Whether the working tree that made the cache differs from its commit (None: no git)."""
    run = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain"], capture_output=True)
    return bool(run.stdout.strip()) if run.returncode == 0 else None


def pack_cache(folder: Path, record: dict, archive: Path) -> None:
    """The cache's files and their record in one .tar.xz (xz with all cores where it exists)."""
    (folder / CACHE_RECORD).write_text(json.dumps(record, indent=2))
    names = [CACHE_RECORD, *record["files"]]
    if shutil.which("xz"):
        with open(archive, "wb") as out:
            tar = subprocess.Popen(["tar", "-C", str(folder), "-cf", "-", *names], stdout=-1)
            subprocess.run(["xz", "-6", "-T0", "-c"], stdin=tar.stdout, stdout=out, check=True)
            if tar.wait():
                raise BundleError(f"tar failed packing {folder}")
    else:
        with tarfile.open(archive, "w:xz") as tar:
            for name in names:
                tar.add(folder / name, arcname=name)


def runtime_requirements() -> list[str]:
    """The project's dependencies except torch (the device has its own, built for its GPU)."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return [d for d in deps if not re.match(r"torch\b", d)]


def make_wheels(folder: Path, skip: list[str], with_timm: bool) -> list[str]:
    requirements = [r for r in runtime_requirements() if re.split(r"[<>=!~ ]", r)[0] not in skip]
    command = [sys.executable, "-m", "pip", "wheel", "-q", "-w", str(folder)]
    subprocess.run([*command, *requirements], check=True)
    if with_timm:  # without its dependencies: torchvision must be the device's own, like torch
        subprocess.run([*command, "--no-deps", "timm"], check=True)
    for wheel in folder.glob("*.whl"):  # dependencies of the skipped ones
        if wheel.name.split("-")[0].lower().replace("_", "-") in skip:
            wheel.unlink()
    (folder / "requirements.txt").write_text("\n".join(requirements) + "\n")
    return requirements


def split_into_parts(payload: Path, out: Path, part_bytes: int) -> list[dict]:
    parts = []
    with open(payload, "rb") as f:
        for number in range(1, 10**4):
            block = f.read(part_bytes)
            if not block:
                break
            path = out / f"part-{number:02d}"
            path.write_bytes(block)
            parts.append({"name": path.name, "bytes": len(block), "sha256": sha256_of(path)})
    return parts


def make(args) -> None:
    out = args.out.resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="vitct-bundle-") as tmp:
        tmp = Path(tmp)
        folder, record = make_cache(args.data, args.configfile, tmp / "run", args.cores)
        payload_dir = tmp / "payload"
        (payload_dir / "wheels").mkdir(parents=True)
        pack_cache(folder, record, payload_dir / "cache.tar.xz")
        requirements = (
            [] if args.no_wheels else make_wheels(payload_dir / "wheels", args.skip, args.with_timm)
        )
        payload = tmp / "payload.tar"
        with tarfile.open(payload, "w") as tar:
            tar.add(payload_dir, arcname=".")
        parts = split_into_parts(payload, out, args.part_mib * 2**20)
    manifest = {"cache": record, "requirements": requirements, "parts": parts}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    total = sum(p["bytes"] for p in parts) / 2**20
    print(f"{out}: {len(parts)} part(s), {total:.1f} MiB in all")
    for p in parts:
        print(f"  {p['name']}: {p['bytes'] / 2**20:.1f} MiB")


def gather(bundle: Path, store: Path) -> tuple[dict, list[str]]:
    """Copy the parts carried this time into `store`; (manifest, names still missing)."""
    manifest_path = bundle / MANIFEST
    if not manifest_path.exists():
        manifest_path = store / MANIFEST
    if not manifest_path.exists():
        raise BundleError(
            f"no {MANIFEST} in {bundle} or {store}: carry {bundle}/{MANIFEST} with the parts "
            "(python benchmarks/gpu_bundle.py make ... writes them)"
        )
    manifest = json.loads(manifest_path.read_text())
    store.mkdir(parents=True, exist_ok=True)
    if manifest_path.parent != store:
        shutil.copy(manifest_path, store / MANIFEST)
    missing = []
    for part in manifest["parts"]:
        here, kept = bundle / part["name"], store / part["name"]
        if here.exists() and not (kept.exists() and sha256_of(kept) == part["sha256"]):
            shutil.copy(here, kept)
        if not kept.exists():
            missing.append(part["name"])
        elif sha256_of(kept) != part["sha256"]:
            kept.unlink()
            raise BundleError(
                f"{part['name']} does not match {MANIFEST} (truncated?): carry it again"
            )
    return manifest, missing


def unpack_cache(archive: Path, results: Path) -> dict:
    """Extract the cache into results/data, timed in the order of the pipeline's steps."""
    data = results / "data"
    data.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        tar.extractall(data, filter="data")
    record = json.loads((data / CACHE_RECORD).read_text())
    for name in record["files"]:
        step_order(name)  # only data-step outputs, before any file is trusted
    for name, digest in record["files"].items():
        if sha256_of(data / name) != digest:
            raise BundleError(f"{data / name} does not match the cache's record: make it again")
    now = time.time()
    for name in record["files"]:
        offset = 3 - step_order(name)  # fetch_data 3 s ago, build_manifest 2, preprocess 1
        os.utime(data / name, (now - offset, now - offset))
    return record


def unpack(bundle: Path, results: Path) -> dict:
    store = results / "gpu_bundle"
    manifest, missing = gather(bundle, store / "parts")
    if missing:
        raise BundleError(
            f"parts still missing: {', '.join(missing)}; carry them (with {MANIFEST}) in the "
            "next call and run this again"
        )
    payload = store / "payload.tar"
    with open(payload, "wb") as out:
        for part in manifest["parts"]:
            with open(store / "parts" / part["name"], "rb") as f:
                shutil.copyfileobj(f, out)
    extracted = store / "payload"
    shutil.rmtree(extracted, ignore_errors=True)
    with tarfile.open(payload) as tar:
        tar.extractall(extracted, filter="data")
    payload.unlink()
    record = unpack_cache(extracted / "cache.tar.xz", results)
    (extracted / "cache.tar.xz").unlink()
    return record


def describe(results: Path, what: str) -> str:
    """From the cache record: the --config value naming its dataset, or a line saying where the
    data came from (gpu_pipeline.sh prints it, so a run says it started from a cache)."""
    path = results / "data" / CACHE_RECORD
    if not path.exists():
        raise BundleError(f"no {path}: run `bash benchmarks/gpu_pipeline.sh setup` first")
    r = json.loads(path.read_text())
    if what == "dataset":  # the dataset the cache was made from: its steps are then up to date
        return f"dataset={{source: local, path: {r['data']}}}"
    return (
        f"preprocessed cache made {r['made']} from {r['data']} ({r['counts']}) with "
        f"{r['configfile']} at commit {r['commit'][:10]}"
        + (" (with uncommitted changes)" if r.get("uncommitted_changes") else "")
        + "; no raw image is read here"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make", help="build the bundle here (needs the raw images and pip)")
    m.add_argument("--data", required=True, help="folder of raw images (Kaggle layout) or zip")
    m.add_argument("--configfile", type=Path, default=ROOT / "config" / "config.yaml")
    m.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "gpu_bundle")
    m.add_argument("--part-mib", type=int, default=60)
    m.add_argument("--cores", type=int, default=2)
    m.add_argument("--skip", nargs="*", default=[], help="distributions the device has")
    m.add_argument("--no-wheels", action="store_true", help="data only")
    m.add_argument("--with-timm", action="store_true", help="timm's wheel too (for bench)")
    u = sub.add_parser("unpack", help="on the device: gather the parts, then unpack them")
    u.add_argument("--bundle", type=Path, default=ROOT / "benchmarks" / "gpu_bundle")
    u.add_argument("--results", type=Path, default=Path("results"))
    d = sub.add_parser("describe", help="the unpacked cache's --config dataset value, or origin")
    d.add_argument("what", choices=["dataset", "origin"])
    d.add_argument("--results", type=Path, default=Path("results"))
    args = parser.parse_args()
    try:
        if args.command == "make":
            make(args)
        elif args.command == "describe":
            print(describe(args.results, args.what))
        else:
            record = unpack(args.bundle, args.results)
            print(json.dumps(record))
    except BundleError as e:
        raise SystemExit(f"gpu_bundle: {e}") from None


if __name__ == "__main__":
    main()
