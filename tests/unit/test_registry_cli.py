"""`llmops models` through the real command (click's runner on `llmops.cli.main`, and once the
installed entry point) against a registry that `register()` filled: list, versions, show, alias set
and history, tables and JSON, and the errors a person meets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmops.archive import archive_version, delete_version
from llmops.cli import main
from llmops.registry import GateVerdict, Lineage, alias_history, read_alias, register
from llmops.registry_cli import location
from llmops.storage import LocalStore


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    root = tmp_path / "registry"
    store = LocalStore(root)
    for i in range(3):
        model = tmp_path / f"model-{i}"
        model.mkdir()
        (model / "config.json").write_text(json.dumps({"i": i}))
        gates = [GateVerdict(metric="accuracy", operator=">=", threshold=0.5, value=0.9, passed=True)]
        register(
            store, "chat", model, metrics={"accuracy": 0.9}, gates=gates, lineage=Lineage(parent_job="ml/t-1")
        )
    model = tmp_path / "embed"
    model.mkdir()
    (model / "config.json").write_text("{}")
    register(store, "embed", model, metrics={}, gates=[], lineage=Lineage())
    return root


def llmops(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.output


def test_models_versions_and_show(registry: Path) -> None:
    code, out = llmops("models", "list", "--registry", str(registry))
    assert code == 0 and out.splitlines() == [
        "NAME    VERSIONS   LATEST   ALIASES",
        "chat    3          3",
        "embed   1          1",
    ]
    code, out = llmops("models", "versions", "chat", "--registry", str(registry), "-o", "json")
    listed = json.loads(out)
    assert [v["version"] for v in listed] == ["1", "2", "3"] and listed[0]["lineage"]["parentJob"] == "ml/t-1"
    code, out = llmops("models", "versions", "embed", "--registry", str(registry))
    assert out.splitlines()[1].split()[2] == "none"  # registered without gates
    code, out = llmops("models", "show", "chat:2", "--registry", str(registry), "-o", "json")
    assert code == 0 and json.loads(out)["version"] == "2" and json.loads(out)["aliases"] == []


def test_alias_set_then_history_as_a_person_reads_it(registry: Path) -> None:
    env = {"LLMOPS_REGISTRY": str(registry), "USER": "ana"}
    code, out = llmops(
        "models", "alias", "set", "chat", "champion", "1", "--reason", "first release", env=env
    )
    assert code == 0 and out.startswith("chat@champion: (new) -> 1  by user:ana at ")
    code, out = llmops(
        "models", "alias", "set", "chat", "champion", "2", "--reason", "won by 0.03",
        "--by", "retrainpolicy/ml/chat", "--move-id", "ml-chat-7", env=env,
    )  # fmt: skip
    assert code == 0 and "1 -> 2  by retrainpolicy/ml/chat" in out
    code, out = llmops("models", "alias", "set", "chat", "champion", "2", "--reason", "again", env=env)
    assert code == 0 and "already names version 2: nothing moved, nothing recorded" in out

    store = LocalStore(registry)
    assert read_alias(store, "chat", "champion").move_id == "ml-chat-7"  # type: ignore[union-attr]
    assert [(m.previous, m.version, m.by) for m in alias_history(store, "chat")] == [
        (None, "1", "user:ana"),
        ("1", "2", "retrainpolicy/ml/chat"),
    ]
    code, out = llmops("models", "alias", "history", "chat", "champion", env=env)
    rows = [line.split(None, 4) for line in out.splitlines()]
    assert out.splitlines()[0].split() == ["AT", "ALIAS", "FROM", "TO", "BY", "REASON"]
    assert [r[1:4] for r in rows[1:]] == [["champion", "-", "1"], ["champion", "1", "2"]]
    assert out.splitlines()[2].endswith("retrainpolicy/ml/chat   won by 0.03")
    code, out = llmops("models", "alias", "history", "chat", "-o", "json", env=env)
    assert [m["moveId"] for m in json.loads(out)][1] == "ml-chat-7"
    code, out = llmops("models", "list", env=env)
    assert out.splitlines()[1].split() == ["chat", "3", "3", "champion=2"]
    code, out = llmops("models", "show", "chat@champion", env=env)
    assert "version: '2'" in out and out.rstrip().endswith("aliases:\n- champion")
    assert llmops("models", "show", "chat@champion", "-o", "yaml", env=env)[1] == out
    code, out = llmops("models", "show", "chat@champion", "-o", "table", env=env)  # a document, no table
    assert code == 2 and "'table' is not one of 'yaml', 'json'" in out


def test_errors_name_what_is_wrong(registry: Path) -> None:
    env = {"LLMOPS_REGISTRY": str(registry)}
    code, out = llmops("models", "alias", "set", "chat", "champion", "9", "--reason", "x", env=env)
    assert code == 1 and "Error: model 'chat' has no version '9'" in out
    code, out = llmops("models", "alias", "set", "chat", "champion", "1", env=env)
    assert code == 2 and "Missing option '--reason'" in out
    code, out = llmops("models", "show", "Chat@x", env=env)
    assert code == 1 and "Error: name: String should match pattern" in out
    code, out = llmops("models", "show", "chat", env=env)
    assert code == 2 and "write NAME:VERSION or NAME@ALIAS" in out
    code, out = llmops("models", "list", env={"LLMOPS_REGISTRY": ""})
    assert code == 2 and "no registry: pass --registry" in out
    code, out = llmops("models", "list", "--registry", "http://minio:9000/models")
    assert code == 2 and "use s3://bucket/prefix or a directory" in out
    code, out = llmops("models", "list", "--registry", str(registry) + "-typo")  # not an empty registry
    assert code == 2 and "no such directory" in out


def test_retired_versions_show_their_tombstone(registry: Path, tmp_path: Path) -> None:
    store, archive = LocalStore(registry), LocalStore(tmp_path / "archive")
    receipt = archive_version(store, "chat", "2", archive)
    delete_version(store, "chat", "2", target=archive, receipt=receipt, actor="user:ana", reason="superseded")
    code, out = llmops("models", "list", "--registry", str(registry))
    assert out.splitlines()[1].split() == ["chat", "2", "(+1", "retired)", "3"]
    code, out = llmops("models", "versions", "chat", "--registry", str(registry))
    lines = out.splitlines()
    assert code == 0 and [line.split()[0] for line in lines[:3]] == ["VERSION", "1", "3"] and lines[3] == ""
    assert lines[4].split() == ["RETIRED", "AT", "BY", "REASON", "ARCHIVE", "RETAIN", "UNTIL"]
    assert lines[5].split()[::2] == ["2", "user:ana", f"file://{tmp_path / 'archive'}"]
    code, out = llmops("models", "versions", "chat", "--registry", str(registry), "-o", "json")
    listed = json.loads(out)
    assert [v["version"] for v in listed] == ["1", "3", "2"] and listed[2]["retired"][
        "reason"
    ] == "superseded"
    code, out = llmops("models", "show", "chat:2", "--registry", str(registry), "-o", "json")
    assert code == 0 and json.loads(out)["retired"]["receiptKey"] == receipt.key
    code, out = llmops(
        "models", "alias", "set", "chat", "champion", "2", "--reason", "x", "--registry", str(registry)
    )
    assert code == 1 and "chat:2 in" in out and "was retired" in out and "archive is at file://" in out
    receipt = archive_version(store, "embed", "1", archive)
    delete_version(store, "embed", "1", target=archive, receipt=receipt, actor="user:ana", reason="unused")
    code, out = llmops("models", "list", "--registry", str(registry), "-o", "json")
    assert json.loads(out)[1] == {"name": "embed", "versions": 0, "retired": 1, "latest": None, "aliases": {}}
    code, out = llmops("models", "versions", "embed", "--registry", str(registry))
    assert code == 0 and out.splitlines()[0].split()[0] == "RETIRED"


def test_s3_locations_take_the_standard_aws_environment() -> None:
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_REGION": "eu-west-1"}
    where = location("s3://models/team-a/registry", env)
    assert where.s3 is not None and (where.s3.bucket, where.s3.prefix) == ("models", "team-a/registry")
    assert (where.s3.endpoint, where.s3.region) == ("http://127.0.0.1:9000", "eu-west-1")
    assert location("s3://models", {"AWS_ENDPOINT_URL_S3": "http://s3:9000"}).s3.endpoint == "http://s3:9000"  # type: ignore[union-attr]
    assert location("file:///srv/registry", {}).local.path == "/srv/registry"  # type: ignore[union-attr]


def test_the_installed_command_has_it(registry: Path) -> None:
    command = Path(sys.executable).parent / "llmops"
    out = subprocess.run(
        [str(command), "models", "versions", "chat", "-o", "json"],
        env={**os.environ, "LLMOPS_REGISTRY": str(registry)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert len(json.loads(out)) == 3


def test_verify_archive_re_hashes_a_retired_version_for_an_auditor(registry: Path, tmp_path: Path) -> None:
    store, archive = LocalStore(registry), LocalStore(tmp_path / "archive")
    receipt = archive_version(store, "chat", "2", archive)
    delete_version(store, "chat", "2", target=archive, receipt=receipt, actor="user:ana", reason="superseded")
    args = [
        "models",
        "verify-archive",
        "chat:2",
        "--archive",
        str(tmp_path / "archive"),
        "--registry",
        str(registry),
    ]
    code, out = llmops(*args)
    assert code == 0 and f"chat:2 in file://{tmp_path / 'archive'}/models/chat/versions/2:" in out, out
    assert f"{len(receipt.objects)} objects" in out and "sha256 verified; lock none" in out
    config = next(o.key for o in receipt.objects if o.key.endswith("model/config.json"))
    (tmp_path / "archive" / config).write_text("tampered")
    code, out = llmops(*args, "-o", "json")
    body = json.loads(out)
    assert (
        code == 1 and body["retired"] and len(body["problems"]) == 1 and "config.json" in body["problems"][0]
    )
    code, out = llmops("models", "verify-archive", "chat:1", "--archive", str(tmp_path / "archive"),
                       "--registry", str(registry))  # fmt: skip
    assert code == 1 and "no archive receipt for chat:1" in out
    code, out = llmops("models", "verify-archive", "chat:2", "--archive", str(tmp_path / "archiev"),
                       "--registry", str(registry))  # fmt: skip
    assert code == 2 and "Invalid value for --archive" in out and "archiev': no such directory" in out
    receipt_file = next((tmp_path / "archive").rglob("ARCHIVE.json"))
    receipt_file.write_text(receipt_file.read_text()[:40])
    code, out = llmops(*args)
    assert code == 1 and "Error: the archive receipt models/chat/versions/2/ARCHIVE.json in file://" in out
    assert "is broken (not JSON: EOF while parsing" in out


def test_a_storage_error_is_one_line_naming_its_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import ClientError

    from llmops import registry_cli

    def missing_bucket(store):
        error = {"Error": {"Code": "NoSuchBucket", "Message": "The specified bucket does not exist"}}
        raise ClientError(error | {"ResponseMetadata": {"HTTPStatusCode": 404}}, "ListObjectsV2")

    monkeypatch.setattr(registry_cli, "models", missing_bucket)
    result = CliRunner().invoke(main, ["models", "list", "--registry", str(tmp_path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "the bucket does not exist" in result.output and str(tmp_path) in result.output


def test_import_registers_a_checkpoint_folder_as_a_version_that_says_what_it_holds(
    registry: Path, tmp_path: Path
) -> None:
    """`llmops models import`: a model saved by transformers, the same model declaring a quantization
    (compressed-tensors' config, as llm-compressor writes it), and a PEFT adapter saved by peft, each
    registered as the next version with what it holds, its source as lineage.baseModel and no gates."""
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from llmops.registry import read_version, versions
    from llmops.serving.local import make_tiny_llama

    corpus = Path(__file__).parents[2] / "tests" / "serving" / "data" / "corpus.txt"
    model = make_tiny_llama(tmp_path / "tiny", corpus, max_positions=64)
    code, out = llmops("models", "import", str(model), "tiny", "--registry", str(registry))
    assert code == 0, out
    assert out.startswith("registered tiny:1 from ") and "a model," in out and "allowUngated" in out
    assert "no tokenizer files" not in out
    store = LocalStore(registry)
    first = read_version(store, "tiny", "1")
    assert (
        first.ungated
        and first.lineage.base_model == str(model.resolve())
        and first.lineage.method == "import"
    )
    assert first.described.kind == "model" and first.described.quantization is None
    assert "config.json" in first.artifacts and "model.safetensors" in first.artifacts

    quantized = tmp_path / "quantized"
    quantized.mkdir()
    for f in model.iterdir():
        (quantized / f.name).write_bytes(f.read_bytes())
    config = json.loads((model / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "compressed-tensors", "format": "pack-quantized"}
    (quantized / "config.json").write_text(json.dumps(config))
    code, out = llmops(
        "models", "import", f"file://{quantized}", "tiny", "--registry", str(registry), "-o", "json"
    )
    assert code == 0, out
    imported = json.loads(out)
    assert imported["content"]["quantization"] == {
        "method": "compressed-tensors", "format": "pack-quantized", "scheme": None, "algorithm": None,
    }  # fmt: skip
    code, shown = llmops(
        "models", "show", f"tiny:{imported['version']}", "--registry", str(registry), "-o", "json"
    )
    assert code == 0 and json.loads(shown) == imported  # one shape in every command: with its aliases
    code, listed = llmops("models", "versions", "tiny", "--registry", str(registry), "-o", "json")
    assert json.loads(listed)[-1] == imported

    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(model), LoraConfig(r=2, target_modules=["q_proj", "v_proj"])
    )
    peft_model.save_pretrained(tmp_path / "adapter")
    code, out = llmops(
        "models", "import", str(tmp_path / "adapter"), "tiny-adapter", "--registry", str(registry)
    )
    assert code == 0 and "a PEFT adapter" in out, out
    adapter = read_version(store, "tiny-adapter", "1").described
    assert (adapter.kind, adapter.adapter, adapter.base) == ("adapter", "", str(model))

    # A model without a tokenizer is registered, and the note says vLLM will not start without one.
    bare = tmp_path / "no-tokenizer"
    bare.mkdir()
    for f in ("config.json", "model.safetensors"):
        (bare / f).write_bytes((model / f).read_bytes())
    code, out = llmops("models", "import", str(bare), "bare", "--registry", str(registry))
    assert code == 0 and "registered bare:1" in out, out
    assert f"note: {bare.resolve()} has no tokenizer files (tokenizer.json, tokenizer.model" in out, out

    # What is not a checkpoint, and sources it cannot read, are refused naming them; nothing registered.
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out = llmops("models", "import", str(empty), "tiny", "--registry", str(registry))
    assert code == 1 and "no config.json" in out and str(empty) in out
    for broken, why in (
        ({"config.json": "{}"}, "no weights here"),
        ({"config.json": "{not json", "model.safetensors": ""}, "config.json is not valid JSON"),
        ({"adapter_config.json": "{}", "adapter_model.safetensors": ""}, "names no base_model_name_or_path"),
    ):
        folder = tmp_path / f"broken-{len(why)}"
        folder.mkdir()
        for file, text in broken.items():
            (folder / file).write_text(text)
        code, out = llmops("models", "import", str(folder), "tiny", "--registry", str(registry))
        assert code == 1 and why in out, out
    for name in ("../evil", "Bad_Name", "tiny:2"):  # names no reference could name are refused first
        code, out = llmops("models", "import", str(model), name, "--registry", str(registry))
        assert code == 1 and "is not a DNS label" in out, out
    assert not (registry / "evil").exists()
    code, out = llmops("models", "import", "hf://just-a-name", "tiny", "--registry", str(registry))
    assert code == 2 and "hf://org/name" in out, out
    code, out = llmops("models", "import", "ftp://host/x", "tiny", "--registry", str(registry))
    assert code == 2 and "use hf://org/name, s3://bucket/prefix or a directory" in out
    assert versions(store, "tiny") == ["1", "2"]


def test_import_makes_a_local_registry_folder_that_readers_refuse(tmp_path: Path) -> None:
    """A writer (`models import`) makes a local registry that is not there yet, as `erasure run
    --receipts` and `report --out` do; a reader refuses it (a typo would read as an empty registry)."""
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    (checkpoint / "model.safetensors").write_bytes(b"")
    (checkpoint / "tokenizer.json").write_text("{}")
    fresh = tmp_path / "new" / "registry"
    code, out = llmops("models", "list", "--registry", str(fresh))
    assert code == 2 and "no such directory" in out and not fresh.exists()
    args = ["models", "import", str(checkpoint), "m", "--registry", str(fresh)]
    result = CliRunner().invoke(main, args, env={"LLMOPS_AUDIT": ""}, catch_exceptions=False)
    assert result.exit_code == 0 and result.stdout.startswith("registered m:1 from "), result.output
    assert result.stderr == f"created a new registry at {fresh}\n"  # a typo of an existing one shows
    code, out = llmops("models", "versions", "m", "--registry", str(fresh))
    assert code == 0 and out.splitlines()[1].split()[0] == "1"
    # The same folder again: a second version (versions are records, never merged), and a note.
    code, out = llmops(*args, env={"LLMOPS_AUDIT": ""})
    assert code == 0 and "registered m:2 from " in out, out
    assert "note: m:2 holds the same files as m:1 (both are kept;" in out and "created" not in out
    assert "`llmops models alias set m ALIAS 1 --reason TEXT`" in out  # runnable as written
    (checkpoint / "config.json").write_text('{"changed": true}')
    code, out = llmops(*args, env={"LLMOPS_AUDIT": ""})
    assert code == 0 and "registered m:3 from " in out and "note:" not in out, out


@pytest.mark.parametrize(
    "command", ["models list", "dev upload", "erasure run", "erasure decide", "erasure list", "audit verify"]
)
def test_no_s3_credentials_advises_the_environment_not_a_secret(tmp_path: Path, command: str) -> None:
    """The CLI reads the keys from the standard AWS environment; the operator's advice (the Secret a
    location names) would send a person running it on their machine the wrong way. Every command
    that reads or writes object storage says so in one line (command_group.storage_errors)."""
    env = {
        "AWS_ACCESS_KEY_ID": None,  # unset
        "AWS_SECRET_ACCESS_KEY": None,
        "AWS_PROFILE": None,
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:1",
    }
    (tmp_path / "key").write_bytes(b"k" * 32)
    (tmp_path / "file.txt").write_text("x")
    argv = {
        "models list": ["models", "list", "--registry", "s3://models/registry"],
        "dev upload": [
            "dev",
            "upload",
            str(tmp_path / "file.txt"),
            "s3://models/x",
            "--endpoint",
            "http://127.0.0.1:1",
        ],
        "erasure run": [
            "erasure",
            "run",
            "--user",
            "u",
            "--key-file",
            str(tmp_path / "key"),
            "--samples",
            "s3://payloads/p",
            "--receipts",
            "s3://receipts/r",
        ],
        "erasure decide": [
            "erasure",
            "decide",
            "e-1",
            "m:1",
            "--decision",
            "retire",
            "--receipts",
            "s3://receipts/r",
        ],
        "erasure list": ["erasure", "list", "--receipts", "s3://receipts/r"],
        "audit verify": ["audit", "verify", "--audit", "s3://audit/a"],
    }[command]
    code, out = llmops(*argv, env=env)
    assert code == 1 and "Traceback" not in out, out
    assert "no credentials for object storage" in out
    assert "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in out
    assert "Secret" not in out


def test_a_bucket_name_s3_refuses_is_one_line_naming_the_field() -> None:
    code, out = llmops("models", "list", "--registry", "s3://p/x")
    assert code == 2 and "Traceback" not in out and "errors.pydantic.dev" not in out, out
    assert "'s3://p/x': s3.bucket: String should have at least 3 characters" in out


@pytest.mark.parametrize(
    ("command", "operation"),
    [(["models", "list", "--registry", "s3://models/p"], "ListObjectsV2"), (["dev", "upload"], "PutObject")],
)
def test_a_failing_store_tells_each_retry_while_a_person_waits(tmp_path: Path, command, operation) -> None:
    """An S3 endpoint that answers 503 to everything (a real HTTP server here): each retry is one
    line on stderr as it happens, then one error line; never minutes of silence."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Unavailable(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_PUT(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.do_GET()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{server.server_port}",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "y",
    }
    try:
        if command[0] == "dev":
            (tmp_path / "f.txt").write_text("x")
            command = [
                *command,
                str(tmp_path / "f.txt"),
                "s3://models/p",
                "--endpoint",
                env["AWS_ENDPOINT_URL"],
            ]
        result = CliRunner().invoke(main, command, env=env)
    finally:
        server.shutdown()
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert lines[:4] == [
        f"s3://models/p: {operation} was answered 503; attempt {n} of 5 follows" for n in range(2, 6)
    ]
    assert len(lines) == 5 and "gave up after 5 attempts" in lines[4]


def test_a_store_that_never_answers_says_how_long_each_attempt_waited() -> None:
    """A real socket that accepts and never answers: each retry line names the wait."""
    import socket

    from llmops.storage import Credentials, S3Store

    listener = socket.create_server(("127.0.0.1", 0))
    try:
        store = S3Store(
            "models",
            "p",
            endpoint=f"http://127.0.0.1:{listener.getsockname()[1]}",
            region=None,
            credentials=Credentials("x", "y"),
            read_timeout=0.2,
        )
        told: list[str] = []
        store.on_retry(told.append)
        with pytest.raises(Exception) as failed:
            list(store.list())
        assert type(failed.value).__name__ == "ReadTimeoutError"
        line = (
            "s3://models/p: ListObjectsV2 got no answer in 0.2 s (ReadTimeoutError); attempt {} of 5 follows"
        )
        assert told == [line.format(n) for n in range(2, 6)]
    finally:
        listener.close()


def test_a_move_id_names_one_move_a_repeat_says_nothing_moved(registry: Path) -> None:
    env = {"LLMOPS_REGISTRY": str(registry), "USER": "ana"}
    code, out = llmops(
        "models", "alias", "set", "chat", "prod", "1", "--reason", "a", "--move-id", "m1", env=env
    )
    assert code == 0 and out.startswith("chat@prod: (new) -> 1  by user:ana")
    for alias, version in [("prod", "2"), ("staging", "1")]:  # another version, another alias: refused
        args = ["models", "alias", "set", "chat", alias, version, "--reason", "b", "--move-id", "m1"]
        code, out = llmops(*args, env=env)
        assert code == 1 and out.startswith("Error: move id 'm1' already moved chat@prod to 1 at "), out
        assert "pass a new --move-id" in out and len(out.splitlines()) == 1
    store = LocalStore(registry)
    assert read_alias(store, "chat", "prod").version == "1" and read_alias(store, "chat", "staging") is None  # type: ignore[union-attr]
    args = ["models", "alias", "set", "chat", "prod", "1", "--reason", "a", "--move-id", "m1"]
    code, out = llmops(*args, env=env)
    assert code == 0 and out.startswith("chat@prod: move m1 was already made ((new) -> 1 by user:ana")
    assert out.rstrip().endswith("nothing moved")
    code, out = llmops(*args, "-o", "json", env=env)
    assert code == 0 and json.loads(out)["moved"] is False and json.loads(out)["moveId"] == "m1"
    code, out = llmops("models", "alias", "set", "chat", "prod", "3", "--reason", "c", "-o", "json", env=env)
    assert code == 0 and json.loads(out)["moved"] is True and json.loads(out)["previous"] == "1"
    assert len(alias_history(store, "chat", "prod")) == 2


def test_blank_reason_or_by_is_a_usage_error(registry: Path, tmp_path: Path) -> None:
    env = {"LLMOPS_REGISTRY": str(registry)}
    for extra, flag in [(["--reason", ""], "--reason"), (["--reason", "  "], "--reason"),
                        (["--reason", "x", "--by", ""], "--by")]:  # fmt: skip
        code, out = llmops("models", "alias", "set", "chat", "prod", "1", *extra, env=env)
        assert code == 2 and f"Invalid value for {flag}: is blank" in out, out
    assert read_alias(LocalStore(registry), "chat", "prod") is None
    checkpoint = tmp_path / "model-0"
    code, out = llmops("models", "import", str(checkpoint), "chat", "--by", " ", env=env)
    assert code == 2 and "Invalid value for --by: is blank" in out


def test_a_missing_alias_lists_the_aliases_and_history_refuses_what_is_not_there(registry: Path) -> None:
    env = {"LLMOPS_REGISTRY": str(registry)}
    code, out = llmops("models", "show", "chat@champion", env=env)
    assert (
        code == 1 and "has no alias 'champion'" in out and "(it has no aliases; its versions: 1, 2, 3)" in out
    )
    llmops("models", "alias", "set", "chat", "champion", "2", "--reason", "x", env=env)
    code, out = llmops("models", "show", "chat@champoin", env=env)
    assert code == 1 and out.rstrip().endswith("(its aliases: champion)"), out
    code, out = llmops("models", "alias", "history", "chatt", env=env)
    assert code == 1 and "Error: model 'chatt' has no versions in " in out
    code, out = llmops("models", "alias", "history", "chat", "champoin", env=env)
    assert code == 1 and "has no alias 'champoin'" in out and "(its aliases: champion)" in out
    code, out = llmops("models", "alias", "history", "embed", "prod", env=env)
    assert code == 1 and "(its aliases: none)" in out


def test_a_folder_without_models_is_said_to_be_no_registry(registry: Path, tmp_path: Path) -> None:
    for folder in [tmp_path / "model-0", registry / "models"]:  # a checkpoint; one level too deep
        result = CliRunner().invoke(main, ["models", "list", "--registry", str(folder)])
        assert result.exit_code == 0 and result.stdout.strip() == "NAME   VERSIONS   LATEST   ALIASES"
        assert result.stderr.startswith(
            f"warning: {folder} holds no models/ folder: it may not be a registry"
        )
        result = CliRunner().invoke(main, ["models", "versions", "x"], env={"LLMOPS_REGISTRY": str(folder)})
        assert result.exit_code == 1 and "check LLMOPS_REGISTRY" in result.stderr
    result = CliRunner().invoke(main, ["models", "list", "--registry", str(registry)])
    assert result.exit_code == 0 and result.stderr == ""


def test_a_bad_registry_from_the_environment_names_the_variable(tmp_path: Path) -> None:
    code, out = llmops("models", "list", env={"LLMOPS_REGISTRY": str(tmp_path / "nope")})
    assert code == 2 and "Invalid value for LLMOPS_REGISTRY (environment):" in out and "--registry" not in out
    code, out = llmops("models", "list", "--registry", str(tmp_path / "nope"))
    assert code == 2 and "Invalid value for --registry:" in out


def test_import_refuses_a_registry_inside_its_source(tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    (checkpoint / "model.safetensors").write_bytes(b"")
    for inside in [checkpoint, checkpoint / "registry"]:
        code, out = llmops("models", "import", str(checkpoint), "m", "--registry", str(inside))
        assert code == 2 and "Invalid value for --registry:" in out and "copy the registry into itself" in out
    assert sorted(p.name for p in checkpoint.iterdir()) == ["config.json", "model.safetensors"]


@pytest.mark.parametrize("ref", ["chat", "chat:", ":1", "@champion", "chat@"])
@pytest.mark.parametrize(
    "command",
    [
        ("models", "show", "{ref}"),
        ("models", "verify-archive", "{ref}", "--archive", "{registry}"),
        ("erasure", "decide", "e-1", "{ref}", "--decision", "retire", "--receipts", "{registry}"),
    ],
)
def test_every_model_reference_needs_both_halves_and_names_its_argument(registry, command, ref) -> None:
    """Each command that takes NAME:VERSION (or NAME@ALIAS) refuses a reference with a half missing as
    a usage error naming its own argument, before it reads anything."""
    args = [a.format(ref=ref, registry=registry) for a in command]
    code, out = llmops(*args, env={"LLMOPS_REGISTRY": str(registry)})
    forms = "NAME:VERSION or NAME@ALIAS" if command[1] == "show" else "NAME:VERSION"
    assert code == 2 and "String should" not in out, out
    assert f"{ref!r}: write {forms}, both halves given" in out
    assert f"Invalid value for {'REF' if command[1] == 'show' else 'NAME:VERSION'}" in out


def test_a_broken_manifest_is_named_with_what_is_wrong_and_skipped_by_every_listing(registry: Path) -> None:
    """chat:3 truncated, chat:2 claiming to be another version (copied by hand): `show` refuses each
    saying what is wrong; `versions` and `list` go on without them, with a warning on stderr each, and
    LATEST is the newest version that reads, as `chat@latest` resolves."""
    versions = registry / "models" / "chat" / "versions"
    (versions / "3" / "manifest.json").write_text('{"name": "chat", "version": "3",')
    manifest = json.loads((versions / "2" / "manifest.json").read_text())
    (versions / "2" / "manifest.json").write_text(json.dumps({**manifest, "version": "9"}))
    env = {"LLMOPS_REGISTRY": str(registry)}

    def run(*args: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr

    code, out, err = run("models", "show", "chat:3")
    assert code == 1 and "chat:3 in" in err
    assert "has a broken manifest.json (not JSON: EOF while parsing" in err
    code, out, err = run("models", "show", "chat:2")
    assert code == 1 and "has a broken manifest.json (it says it is chat:9)" in err
    code, out, err = run("models", "versions", "chat", "-o", "json")
    assert code == 0 and [v["version"] for v in json.loads(out)] == ["1"]
    assert [line.split(" in ")[0] for line in err.splitlines()] == ["warning: chat:2", "warning: chat:3"]
    code, out, err = run("models", "list")
    assert code == 0 and out.splitlines()[1].split()[:3] == ["chat", "3", "1"]
    assert "warning: chat:3" in err and "warning: chat:2" in err
    code, out, err = run("models", "show", "chat@latest")
    assert code == 0 and "version: '1'" in out
