"""The local admin key: generated into the state folder at the first start, kept across restarts, owner-only."""

from __future__ import annotations

import json
import stat

from rtrec.local.state import LocalState


def test_the_admin_key_is_generated_once_and_kept_owner_only(tmp_path):
    state = LocalState(tmp_path / "state")
    key = state.admin_api_key()
    assert len(key) >= 32 and state.admin_api_key() == key == LocalState(tmp_path / "state").admin_api_key()
    assert json.loads(state.api_keys_file.read_text()) == {"admin": key}
    assert stat.S_IMODE(state.api_keys_file.stat().st_mode) == 0o600
    assert LocalState(tmp_path / "other").admin_api_key() != key


def test_a_damaged_keys_file_gets_a_new_key(tmp_path):
    state = LocalState(tmp_path)
    state.api_keys_file.write_text('{"admin": "short"}')
    assert state.admin_api_key() != "short" and len(state.admin_api_key()) >= 32
