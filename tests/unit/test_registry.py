"""Registry aliases as first-class records: every move recorded with who, when, from and to which
version and why; idempotent by move id; pointer and history agree after a crash between the two
writes. On the local store (the registry's unit tests use it; S3's create-only write is the same
contract, covered where MinIO runs: tests/workloads).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmops.api.common import ModelReference
from llmops.registry import (
    AliasMove,
    GateVerdict,
    Lineage,
    RegistryError,
    alias_history,
    aliases,
    find_move,
    models,
    move_alias,
    read_alias,
    read_version,
    register,
    resolve,
    set_alias,
)
from llmops.storage import LocalStore


def _filled(root: Path, tmp: Path, n: int = 3, name: str = "chat") -> LocalStore:
    store = LocalStore(root)
    for i in range(n):
        model = tmp / f"{name}-{i}"
        model.mkdir()
        (model / "config.json").write_text(json.dumps({"i": i}))
        gates = [GateVerdict(metric="accuracy", operator=">=", threshold=0.5, value=0.9, passed=True)]
        register(store, name, model, metrics={"accuracy": 0.9}, gates=gates, lineage=Lineage())
    return store


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return _filled(tmp_path / "registry", tmp_path)


class CrashOnce:
    """The store, except that the first put whose key contains `where` raises, as a process killed
    between two writes would stop there."""

    def __init__(self, inner: LocalStore, where: str) -> None:
        self.inner, self.where, self.crashed = inner, where, False
        self.uri = inner.uri

    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = True) -> None:
        if self.where in key and not self.crashed:
            self.crashed = True
            raise ConnectionError(f"crashed before writing {key}")
        self.inner.put_bytes(key, data, overwrite=overwrite)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def _records(store: LocalStore) -> list[str]:
    return list(store.list("models/chat/alias-history/"))


def test_a_move_is_recorded_and_the_alias_resolves_to_it(store: LocalStore) -> None:
    assert read_alias(store, "chat", "champion") is None and aliases(store, "chat") == {}
    first = move_alias(store, "chat", "champion", "1", by="user:ana", reason="first release")
    second = move_alias(store, "chat", "champion", "2", by="retrainpolicy/ml/chat", reason="won by 0.03")
    assert (first.previous, first.version, second.previous, second.version) == (None, "1", "1", "2")
    assert read_alias(store, "chat", "champion") == second
    assert aliases(store, "chat") == {"champion": "2"}
    assert resolve(store, ModelReference(name="chat", alias="champion")).version == "2"
    assert alias_history(store, "chat", "champion") == [first, second]
    assert [(m.by, m.reason) for m in alias_history(store, "chat")] == [
        ("user:ana", "first release"),
        ("retrainpolicy/ml/chat", "won by 0.03"),
    ]
    # camelCase on disk, and an old reader that takes only "version" still works.
    pointer = json.loads(store.get_bytes("models/chat/aliases/champion.json"))
    assert pointer["version"] == "2" and pointer["moveId"] == second.move_id
    assert set(pointer) == {"model", "alias", "version", "previous", "by", "reason", "at", "moveId"}
    assert second.at.endswith("+00:00") and len(second.at) == len("2026-11-30T10:05:00+00:00")
    assert models(store) == ["chat"]


def test_a_repeat_with_the_same_move_id_changes_nothing(store: LocalStore) -> None:
    move = move_alias(store, "chat", "challenger", "2", by="user:ana", reason="try", move_id="run-7")
    again = move_alias(store, "chat", "challenger", "3", by="user:bob", reason="other", move_id="run-7")
    assert again == move and read_alias(store, "chat", "challenger") == move
    assert len(_records(store)) == 1
    # After the alias moved on, repeating the old move returns it and does not move the alias back.
    later = move_alias(store, "chat", "challenger", "3", by="user:ana", reason="next", move_id="run-8")
    assert move_alias(store, "chat", "challenger", "2", by="user:ana", reason="try", move_id="run-7") == move
    assert read_alias(store, "chat", "challenger") == later and len(_records(store)) == 2
    # A key that only ends like another one is a different move.
    other = move_alias(store, "chat", "challenger", "1", by="user:ana", reason="x", move_id="x-run-8")
    assert other.version == "1" and other.previous == "3"


def test_moving_an_alias_to_the_version_it_names_records_nothing(store: LocalStore) -> None:
    move = move_alias(store, "chat", "champion", "1", by="user:ana", reason="first")
    same = move_alias(store, "chat", "champion", "1", by="user:bob", reason="again", move_id="new-key")
    assert same == move and same.move_id != "new-key"
    assert alias_history(store, "chat", "champion") == [move] and len(_records(store)) == 1


def test_bad_moves_are_refused_naming_what_is_wrong(store: LocalStore) -> None:
    with pytest.raises(RegistryError, match="has no version '9'"):
        move_alias(store, "chat", "champion", "9", by="user:ana", reason="")
    with pytest.raises(RegistryError, match="alias 'Champion!' is not a DNS label"):
        move_alias(store, "chat", "Champion!", "1", by="user:ana", reason="")
    with pytest.raises(RegistryError, match="move_id 'a/b'"):
        move_alias(store, "chat", "champion", "1", by="user:ana", reason="", move_id="a/b")
    assert read_alias(store, "chat", "champion") is None and _records(store) == []


def test_a_missing_version_or_alias_says_whether_the_model_is_there(store: LocalStore) -> None:
    """A typo in the name reads differently from a version not yet registered, and from a model whose
    versions are all retired: each message says which, so the reader knows where to look next."""
    where = store.uri
    with pytest.raises(RegistryError) as e:
        read_version(store, "chat", "9")
    assert str(e.value) == f"model 'chat' has no version '9' in {where} (its versions: 1, 2, 3)"
    with pytest.raises(RegistryError) as e:
        resolve(store, ModelReference(name="chta", alias="prod"))
    assert str(e.value) == f"model 'chta' has no alias 'prod' in {where} (no model of that name there)"
    with pytest.raises(RegistryError) as e:
        read_version(store, "chta", "1")
    assert str(e.value).endswith("(no model of that name there)")
    root = Path(store.root)
    for v in ("1", "2", "3"):  # retired: the manifest gone, the tombstone kept
        (root / f"models/chat/versions/{v}/manifest.json").rename(
            root / f"models/chat/versions/{v}/tombstone.json"
        )
    with pytest.raises(RegistryError) as e:
        read_version(store, "chat", "4")
    assert str(e.value).endswith("(every version of it is retired: 1, 2, 3)")


def test_a_crash_between_pointer_and_history_is_completed_by_the_repeat(store: LocalStore) -> None:
    move_alias(store, "chat", "champion", "1", by="user:ana", reason="first", move_id="m1")
    crashing = CrashOnce(store, "/alias-history/")
    with pytest.raises(ConnectionError):
        move_alias(crashing, "chat", "champion", "2", by="rp", reason="won", move_id="m2")  # type: ignore[arg-type]
    pointer = read_alias(store, "chat", "champion")
    assert pointer is not None and pointer.version == "2" and len(_records(store)) == 1
    # A reader already sees the move the pointer holds (the history never lags the pointer).
    assert [m.move_id for m in alias_history(store, "chat", "champion")] == ["m1", "m2"]

    repeated = move_alias(crashing, "chat", "champion", "2", by="rp", reason="won", move_id="m2")  # type: ignore[arg-type]
    assert repeated == pointer and len(_records(store)) == 2
    history = alias_history(store, "chat", "champion")
    assert [(m.previous, m.version, m.move_id) for m in history] == [(None, "1", "m1"), ("1", "2", "m2")]
    assert history[-1] == read_alias(store, "chat", "champion")


def test_a_crash_left_unrepeated_is_recorded_by_the_next_move(store: LocalStore) -> None:
    crashing = CrashOnce(store, "/alias-history/")
    with pytest.raises(ConnectionError):
        move_alias(crashing, "chat", "champion", "1", by="user:ana", reason="first", move_id="lost")  # type: ignore[arg-type]
    assert _records(store) == []
    move_alias(store, "chat", "champion", "2", by="user:bob", reason="next", move_id="m2")
    assert [(m.move_id, m.previous) for m in alias_history(store, "chat", "champion")] == [
        ("lost", None),
        ("m2", "1"),
    ]
    assert len(_records(store)) == 2


def test_a_crash_before_the_pointer_changes_nothing_and_the_repeat_moves(store: LocalStore) -> None:
    move_alias(store, "chat", "champion", "1", by="user:ana", reason="first", move_id="m1")
    crashing = CrashOnce(store, "/aliases/")
    with pytest.raises(ConnectionError):
        move_alias(crashing, "chat", "champion", "3", by="rp", reason="won", move_id="m3")  # type: ignore[arg-type]
    assert aliases(store, "chat") == {"champion": "1"} and len(_records(store)) == 1
    move = move_alias(crashing, "chat", "champion", "3", by="rp", reason="won", move_id="m3")  # type: ignore[arg-type]
    assert (move.previous, move.version) == ("1", "3") and len(_records(store)) == 2


def test_moves_in_the_same_second_keep_their_order(store: LocalStore) -> None:
    for i, version in enumerate(["1", "2", "3", "1", "2"]):
        move_alias(store, "chat", "champion", version, by="user:ana", reason=str(i))
    history = alias_history(store, "chat", "champion")
    assert [m.reason for m in history] == ["0", "1", "2", "3", "4"]
    assert [m.previous for m in history] == [None, "1", "2", "3", "1"]
    # The records count the moves: that, not `at` (to the second), orders them.
    names = [key.rsplit("/", 1)[-1] for key in _records(store)]
    assert [n[:9] for n in names] == [f"{i:08d}-" for i in range(1, 6)]
    assert (
        names[0]
        == f"00000001-{history[0].at[:19].replace('-', '').replace(':', '')}Z-{history[0].move_id}.json"
    )


def test_a_pointer_from_before_the_history_still_reads_and_moves(store: LocalStore) -> None:
    store.put_bytes("models/chat/aliases/production.json", json.dumps({"version": "2"}).encode())
    old = read_alias(store, "chat", "production")
    assert old is not None and (old.version, old.move_id, old.by) == ("2", "", "")
    assert aliases(store, "chat") == {"production": "2"} and alias_history(store, "chat", "production") == []
    move = move_alias(store, "chat", "production", "3", by="user:ana", reason="upgrade")
    assert move.previous == "2" and alias_history(store, "chat", "production") == [move]


def test_set_alias_is_a_move(store: LocalStore) -> None:
    move = set_alias(store, "chat", "latest", "2")
    assert isinstance(move, AliasMove) and move.by == "unknown"
    assert resolve(store, ModelReference(name="chat", alias="latest")).version == "2"
    assert alias_history(store, "chat") == [move]


def test_a_manifest_gone_between_listing_and_reading_is_no_version(tmp_path: Path) -> None:
    from botocore.exceptions import ClientError

    from llmops.storage import is_missing

    class Gone(LocalStore):
        def get_bytes(self, key: str) -> bytes:
            error = {"Error": {"Code": "NoSuchKey", "Message": "The specified key does not exist."}}
            raise type("NoSuchKey", (ClientError,), {})(error, "GetObject")  # as botocore's errorfactory

    with pytest.raises(RegistryError, match="has no version"):
        read_version(Gone(tmp_path), "chat", "1")
    assert is_missing(FileNotFoundError()) and not is_missing(PermissionError())


def test_find_move_finds_a_key_across_the_models_aliases(store: LocalStore, tmp_path: Path) -> None:
    first = move_alias(store, "chat", "champion", "1", by="user:ana", reason="a", move_id="m1")
    move_alias(store, "chat", "canary", "2", by="user:ana", reason="b", move_id="x-m1")
    assert find_move(store, "chat", "m1") == first and find_move(store, "chat", "m") is None
    assert find_move(store, "chat", "x-m1").alias == "canary"  # type: ignore[union-attr]
    # A pointer whose history record a crash left out is found too.
    with pytest.raises(ConnectionError):
        move_alias(
            CrashOnce(store, "alias-history"), "chat", "canary", "3", by="rp", reason="c", move_id="m3"
        )  # type: ignore[arg-type]
    assert find_move(store, "chat", "m3").version == "3"  # type: ignore[union-attr]


def test_a_missing_alias_names_the_aliases_there_are(store: LocalStore) -> None:
    with pytest.raises(
        RegistryError, match=r"no alias 'prod' .*\(it has no aliases; its versions: 1, 2, 3\)$"
    ):
        resolve(store, ModelReference(name="chat", alias="prod"))
    move_alias(store, "chat", "champion", "1", by="user:ana", reason="a")
    with pytest.raises(RegistryError, match=r"no alias 'champoin' .*\(its aliases: champion\)$"):
        resolve(store, ModelReference(name="chat", alias="champoin"))
