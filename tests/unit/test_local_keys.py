"""The local API keys: one per role, generated into the state folder at the first start, kept across restarts,
owner-only; and the rule that decides when `rtrec run` requires the read and events keys."""

from __future__ import annotations

import json
import stat

import pytest

from rtrec_local.cli.keys import is_loopback
from rtrec_local.state import LocalState


def test_a_key_per_role_is_generated_once_and_kept_owner_only(tmp_path):
    state = LocalState(tmp_path / "state")
    keys = state.api_keys()
    assert set(keys) == {"admin", "events", "read"}
    assert len(set(keys.values())) == 3
    assert all(len(key) >= 32 for key in keys.values())
    assert state.api_keys() == keys == LocalState(tmp_path / "state").api_keys()
    assert json.loads(state.api_keys_file.read_text()) == keys
    assert stat.S_IMODE(state.api_keys_file.stat().st_mode) == 0o600
    assert LocalState(tmp_path / "other").api_keys()["admin"] != keys["admin"]


def test_an_admin_key_from_before_the_roles_is_kept_and_the_missing_roles_are_added(tmp_path):
    state = LocalState(tmp_path)
    state.api_keys_file.write_text(json.dumps({"admin": "an-admin-key-of-an-older-start"}))
    keys = state.api_keys()
    assert keys["admin"] == "an-admin-key-of-an-older-start"
    assert set(keys) == {"admin", "events", "read"}


@pytest.mark.parametrize("damaged", ['{"admin": "short"}', "not json", "[1, 2]"])
def test_a_damaged_keys_file_gets_new_keys(tmp_path, damaged):
    state = LocalState(tmp_path)
    state.api_keys_file.write_text(damaged)
    keys = state.api_keys()
    assert keys["admin"] != "short"
    assert all(len(key) >= 32 for key in keys.values())


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("127.0.0.2", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.20", False),
        ("rtrec.example.com", False),
    ],
)
def test_keys_are_required_as_soon_as_the_api_listens_beyond_loopback(host, loopback):
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("host", "flag", "required"), [("127.0.0.1", False, False), ("127.0.0.1", True, True), ("0.0.0.0", False, True)]
)
def test_rtrec_run_serves_with_the_generated_keys_and_prints_them(tmp_path, capsys, host, flag, required):
    from pydantic import SecretStr

    from rtrec.settings import ApiSettings, LocalSettings
    from rtrec_local.cli.keys import with_local_keys

    local = LocalSettings(state_dir=tmp_path, api_host=host)
    settings = with_local_keys(ApiSettings(read_api_key=SecretStr("read-key-from-the-environment")), local, require=flag)
    keys = LocalState(tmp_path).api_keys()
    assert settings.admin_api_key.get_secret_value() == keys["admin"]
    assert settings.events_api_key.get_secret_value() == keys["events"]
    assert settings.read_api_key.get_secret_value() == "read-key-from-the-environment"
    assert settings.require_api_keys is required
    assert settings.api_key_rate_limit is not None
    out = capsys.readouterr().out
    assert f"  admin  {keys['admin']}" in out
    assert f"  events {keys['events']}" in out
    assert "read   (RTREC_READ_API_KEY)" in out
    assert "read-key-from-the-environment" not in out
