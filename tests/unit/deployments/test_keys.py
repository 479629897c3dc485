"""API keys in the store: shown once, stored hashed, scoped, line-limited, revocable; the CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from lineguard.cli.main import main
from lineguard.deployments.keys import KEYS_FILE, KeyRing
from lineguard.errors import NotFoundError, StoreError
from lineguard.registry.store import ModelStore


def test_keys_are_stored_hashed_and_checked(store: ModelStore) -> None:
    ring = KeyRing(store)
    assert ring.table().open  # no key: the service runs open
    key, record = ring.create("camera PC", "predict", ["press-1"])
    admin, _ = ring.create("quality lead", "admin")
    stored = (Path(store.root) / KEYS_FILE).read_text()
    assert key not in stored and admin not in stored  # never in plain text
    assert hashlib.sha256(key.encode()).hexdigest() in stored
    table = ring.table()
    assert not table.open
    principal = table.authenticate(key)
    assert principal is not None and principal.id == record.id and principal.scope == "predict"
    assert principal.allows("press-1") and not principal.allows("press-2")
    assert principal.can("predict") and not principal.can("admin")
    boss = table.authenticate(admin)
    assert boss is not None and boss.can("admin") and boss.can("predict") and boss.allows("any-line")
    for wrong in (key[:-1] + ("A" if key[-1] != "A" else "B"), "lg_00000000_" + "x" * 43, "", "Bearer", key + "x"):
        assert table.authenticate(wrong) is None


def test_revoked_keys_stop_working_and_the_last_revocation_opens_nothing(store: ModelStore) -> None:
    ring = KeyRing(store)
    key, record = ring.create("old PC")
    other, _ = ring.create("new PC")
    ring.revoke(record.id)
    table = ring.table()
    assert table.authenticate(key) is None and table.authenticate(other) is not None
    assert [r.active for r in ring.records()] == [False, True]  # kept, for the audit trail
    with pytest.raises(NotFoundError, match="keys list"):
        ring.revoke("ffffffff")
    with pytest.raises(ValueError, match="invalid line name"):
        ring.create("bad", lines=["../../etc"])


def test_a_damaged_key_file_is_an_error_not_an_open_door(store: ModelStore) -> None:
    ring = KeyRing(store)
    ring.create("pc")
    store.write_aux(KEYS_FILE, b"{not json")
    with pytest.raises(StoreError, match="not a valid key file"):
        ring.table()
    with pytest.raises(ValueError, match="folders starting with '_'"):
        store.write_aux("press-1/CURRENT", b"{}")


def test_cli_create_list_revoke(store: ModelStore, capsys: pytest.CaptureFixture[str]) -> None:
    root = str(store.root)
    assert main(["--store", root, "keys", "list"]) == 0
    assert "runs open" in capsys.readouterr().out
    assert main(["--store", root, "keys", "create", "--name", "line 3", "--scope", "admin", "--line", "press-1"]) == 0
    out = capsys.readouterr()
    key = out.out.strip()
    assert key.startswith("lg_") and "not shown again" in out.err
    key_id = key.split("_")[1]
    assert main(["--store", root, "keys", "list"]) == 0
    listing = capsys.readouterr().out
    assert key_id in listing and "admin" in listing and "press-1" in listing and key not in listing
    assert main(["--store", root, "keys", "revoke", key_id]) == 0
    assert main(["--store", root, "keys", "list"]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main(["--store", root, "keys", "revoke", "nope"]) == 5  # not found
    assert json.loads((Path(root) / KEYS_FILE).read_text())[0]["revoked_at"]
