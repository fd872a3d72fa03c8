"""`python -m llmops.fetch`: download registered model versions into a folder, checksums verified.

The serving pod's init container runs it (the command comes from `llmops.engine.fetch_argv`):

    python -m llmops.fetch --registry '{"s3": {...}}' --into /models model=support-bot:3 \\
        adapters/billing=support-bot-billing:2/adapter

`FOLDER=NAME:VERSION/PATH` fetches only the sub-folder PATH of the version (a lora version's adapter,
without the merged model beside it) into FOLDER/PATH.

Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY when both are set (else the pod's
ambient identity); a CA bundle for the endpoint's certificate from AWS_CA_BUNDLE (boto3 reads it). A
storage error ends it with exit status 1 and one line that names the cause (refused credentials, a
missing bucket, TLS, unreachable after the client's bounded retries); the kubelet restarts it.
A version whose gates did not all pass is refused. A folder that already holds
the same version (a restarted init container on the same emptyDir) is kept after its checksums
are verified again.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llmops import logsafe
from llmops.api.common import ObjectStorageLocation
from llmops.engine import FetchItem
from llmops.registry import ModelVersion, RegistryError, download, read_version, selected
from llmops.storage import ObjectStore, credentials_from_env, explain, open_store, sha256_file

MARKER = ".llmops-version.json"


def _complete(target: Path, manifest: ModelVersion, under: str) -> bool:
    marker = target / MARKER
    if not marker.is_file():
        return False
    if json.loads(marker.read_text()) != {"name": manifest.name, "version": manifest.version}:
        return False
    return all(
        (target / rel).is_file() and sha256_file(target / rel) == digest
        for rel, digest in selected(manifest, under).items()
    )


def fetch(store: ObjectStore, item: FetchItem, root: Path) -> Path:
    manifest = read_version(store, item.name, item.version)
    if not manifest.gates_passed:
        failed = ", ".join(g.metric for g in manifest.gates if not g.passed)
        raise RegistryError(f"{item.name}:{item.version} did not pass its gates ({failed}); not serving it")
    target = root / item.folder
    if _complete(target, manifest, item.path):
        return target
    download(store, manifest, target, item.path)
    (target / MARKER).write_text(json.dumps({"name": manifest.name, "version": manifest.version}))
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmops.fetch", description=__doc__.splitlines()[0])
    parser.add_argument("--registry", required=True, help="ObjectStorageLocation as JSON.")
    parser.add_argument("--into", required=True, type=Path, help="Root folder of the model volume.")
    parser.add_argument("items", nargs="+", metavar="FOLDER=NAME:VERSION[/PATH]")
    args = parser.parse_args(argv)
    logsafe.install()
    location = None
    try:
        items = [FetchItem.parse(text) for text in args.items]
        location = ObjectStorageLocation.model_validate_json(args.registry)
        store = open_store(location, credentials_from_env())
        for item in items:
            path = fetch(store, item, args.into)
            print(f"fetched {item.name}:{item.version} into {path}", flush=True)
    except (RegistryError, ValueError) as e:
        print(f"llmops.fetch: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # storage: the cause named (llmops.storage.explain), never a credential
        if (failure := explain(e, location.uri if location else "")) is None:
            raise
        print(f"llmops.fetch: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
