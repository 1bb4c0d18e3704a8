"""The local API keys: one per role, generated into the state folder at the first start, handed to the API
(`rtrec run`, `rtrec serve`) and sent by the commands that call it (`rtrec replay`, `rtrec report`)."""

from __future__ import annotations

import ipaddress
from typing import Any

from pydantic import SecretStr

from rtrec.settings import ApiSettings, LocalSettings
from rtrec_local.cli.utils import local_settings, say
from rtrec_local.state import LocalState

LOCAL_KEY_RATE_LIMIT = 1000.0  # requests/s per key (a token bucket) unless RTREC_API_KEY_RATE_LIMIT says otherwise


def with_local_keys(settings: ApiSettings, local: LocalSettings, *, require: bool) -> ApiSettings:
    """`settings` with a key per role: RTREC_ADMIN_API_KEY / RTREC_EVENTS_API_KEY / RTREC_READ_API_KEY where set, else
    the ones generated into the state folder at the first start (printed, for the person at the terminal). The admin
    key is always required; the read and events keys when the API listens beyond loopback or `require`."""
    state = LocalState(local.state_dir.resolve())
    generated = state.api_keys()
    update: dict[str, Any] = {
        f"{role}_api_key": SecretStr(key) for role, key in generated.items() if getattr(settings, f"{role}_api_key") is None
    }
    required = require or not is_loopback(local.api_host)
    update["require_api_keys"] = required
    if settings.api_key_rate_limit is None:
        update["api_key_rate_limit"] = LOCAL_KEY_RATE_LIMIT
    keyed = settings.model_copy(update=update)
    say(f"API keys (X-Api-Key header; kept in {state.api_keys_file}, unless set in RTREC_<ROLE>_API_KEY):")
    for role, what in (
        ("admin", "the catalog: POST /items, PATCH and DELETE /items/{id}"),
        ("events", "POST /events; its slates are logged as impressions"),
        ("read", "recommendations and similar items, not logged"),
    ):
        key = getattr(keyed, f"{role}_api_key")
        say(
            f"  {role:<6} {key.get_secret_value() if f'{role}_api_key' in update else f'(RTREC_{role.upper()}_API_KEY)'}"
            f"  {what}"
        )
    say(
        "read and event routes need a key"
        if required
        else "read and event routes answer without a key on loopback (--require-api-keys to require one)"
    )
    return keyed


def client_api_key(option: str | None) -> str | None:
    """The key a command sends to the API: --api-key / RTREC_API_KEY, else the local events key if `rtrec run` made
    one (the events role reads too, and its slates are logged as the replay and the probe expect)."""
    if option:
        return option
    state = LocalState(local_settings().state_dir.resolve())
    if not state.api_keys_file.exists():
        return None
    return state.api_keys().get("events")


def is_loopback(host: str) -> bool:
    """Whether `host` is this machine only (localhost, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
