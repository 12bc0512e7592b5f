"""Stand-in for `kaggle datasets download -d SLUG -p DIR` (kaggle 2.2.5), for tests offline.

FAKE_KAGGLE picks what happens; every text, stream and exit code is what the real CLI prints
(recorded from it; tests/test_sources.py checks it against the real CLI where it can):
  ok       the zip at FAKE_KAGGLE_ZIP lands in DIR as <name>.zip, exit 0
  cut      the server sends a short file: half the zip lands in DIR, exit 0
  auth     any HTTP 401 (no credentials where Kaggle wants them, or rejected ones), exit 1
  missing  HTTP 404 (no such dataset), exit 1
  offline  api.kaggle.com does not resolve (no network), exit 1
  broken   the connection breaks mid-download, every retry too, exit 1
With VERBOSE=1 it dumps its request headers first, credentials included, as the real one does.
"""

import argparse
import base64
import os
import sys
from pathlib import Path

AUTH_HELP = """\
Authentication required to call the Kaggle API.

First, you will need a Kaggle account. You can sign up at
  https://www.kaggle.com/account/login

Recommended: log in with OAuth via a web-based authorization flow.
No token to manage; credentials are cached locally for you.
    kaggle auth login

If you'd rather not use OAuth, generate an API token at
  https://www.kaggle.com/settings/api  (click "Generate New Token" under "API")
and supply it to the CLI in one of these ways:

  Option A: Environment variable
    export KAGGLE_API_TOKEN=xxxxxxxxxxxxxx  # token copied from the settings UI

  Option B: API token file
    Save the token to ~/.kaggle/access_token"""

NOT_FOUND_HINT = """
The resource was not found. Check the spelling of the reference you passed.
References are usually '<owner>/<slug>', which you can find in the resource's URL.
To search for one, try 'kaggle search <query>'."""

OFFLINE = (
    "HTTPSConnectionPool(host='api.kaggle.com', port=443): Max retries exceeded with url: "
    "/v1/datasets.DatasetApiService/GetDatasetMetadata (Caused by NameResolutionError("
    "\"HTTPSConnection(host='api.kaggle.com', port=443): Failed to resolve 'api.kaggle.com' "
    '([Errno -2] Name or service not known)"))'
)

BROKEN = (
    "('Connection broken: IncompleteRead(100 bytes read, 6570 more expected)', "
    "IncompleteRead(100 bytes read, 6570 more expected))"
)


def api_base() -> str:
    # KAGGLE_API_ENVIRONMENT=LOCALHOST is the real CLI's only way to another server.
    if os.environ.get("KAGGLE_API_ENVIRONMENT") == "LOCALHOST":
        return "http://localhost/api"
    return "https://api.kaggle.com"


def dump_request() -> None:
    if os.environ.get("KAGGLE_API_TOKEN"):
        auth = f"Bearer {os.environ['KAGGLE_API_TOKEN']}"
    elif os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        pair = f"{os.environ['KAGGLE_USERNAME']}:{os.environ['KAGGLE_KEY']}"
        auth = f"Basic {base64.b64encode(pair.encode()).decode()}"
    else:
        return
    print("---------------------Request----------------------")
    print(f"POST {api_base()}/v1/datasets.DatasetApiService/GetDatasetMetadata")
    print(f"Content-Type: application/json\nAuthorization: {auth}")
    print("--------------------------------------------------")


def main() -> int:
    parser = argparse.ArgumentParser(prog="kaggle")
    parser.add_argument("command", choices=["datasets"])
    parser.add_argument("action", choices=["download"])
    parser.add_argument("-d", "--dataset", required=True)
    parser.add_argument("-p", "--path", default=".")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    mode = os.environ.get("FAKE_KAGGLE", "ok")
    name = args.dataset.split("/")[1]
    if os.environ.get("VERBOSE", "").lower() in ("1", "true", "yes"):
        dump_request()

    if mode == "auth":
        print(AUTH_HELP)
        return 1
    if mode == "missing":
        url = f"{api_base()}/v1/datasets.DatasetApiService/GetDatasetMetadata"
        print(f"404 Client Error: Not Found for url: {url}\n{NOT_FOUND_HINT}", file=sys.stderr)
        return 1
    if mode == "offline":
        print(OFFLINE, file=sys.stderr)
        return 1

    print(f"Dataset URL: https://www.kaggle.com/datasets/{args.dataset}")
    print("License(s): CC-BY-NC-SA-4.0")
    print(f"Downloading {name}.zip to {args.path}")
    target = Path(args.path) / f"{name}.zip"
    target.parent.mkdir(parents=True, exist_ok=True)
    if mode == "broken":
        target.write_bytes(b"")
        for attempt in range(1, 6):
            print(f"\nConnection error: ChunkedEncodingError: {BROKEN}")
            print(f"Retrying in {2**attempt}.0 seconds... (attempt {attempt}/5)")
            print(f"Retry {attempt}/5: Resuming from 0 bytes (6670 bytes left)...")
        print("\nDownload failed after 5 retries.")
        print(f"Error: ChunkedEncodingError: {BROKEN}")
        print(f"Partial file saved at: {target}")
        print("You can resume by running the same command again.")
        print(BROKEN, file=sys.stderr)
        return 1
    data = Path(os.environ["FAKE_KAGGLE_ZIP"]).read_bytes()
    target.write_bytes(data[: len(data) // 2] if mode == "cut" else data)
    size = f"{target.stat().st_size / 1024:.2f}k"
    sys.stderr.write(
        f"\r  0%|          | 0.00/{size} [00:00<?, ?B/s]\r100%|{'█' * 10}| "
        f"{size}/{size} [00:00<00:00, 24.3MB/s]\n"
    )
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
