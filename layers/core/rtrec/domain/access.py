"""Who may call what: API keys with roles, and a per-key rate limit and daily quota.

Three roles, each a separate permission:
- `read`: recommendations and similar items. A caller with `read` alone gets its slates, but they are not logged
  as impressions: an untrusted reader cannot replace a user's pending slate or write into the evaluation data.
- `events`: `POST /events`, and the slates it asks for are logged as impressions, attributed to the key.
- `admin`: the catalog (add, update, deactivate, delete items).

A key is found either by its value (the `X-Api-Key` header, compared in constant time; local and self-hosted) or
by the id API Gateway puts in the request context after it checked the key against its usage plans (AWS, where the
API never sees the key's value). Each key has its own token bucket and daily quota, so one noisy client is throttled
(429) without starving the others; in AWS the usage plans throttle first and these only bound one instance.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from rtrec.errors import ForbiddenError, ThrottledError, UnauthorizedError

ANONYMOUS = "anonymous"


class Role(str, Enum):
    READ = "read"
    EVENTS = "events"
    ADMIN = "admin"


# What each local key is for; a role includes what a client in that role also needs (an app that logs events
# also shows recommendations; an administrator may do both).
ROLE_GRANTS: dict[Role, frozenset[Role]] = {
    Role.READ: frozenset({Role.READ}),
    Role.EVENTS: frozenset({Role.READ, Role.EVENTS}),
    Role.ADMIN: frozenset({Role.READ, Role.EVENTS, Role.ADMIN}),
}


@dataclass(frozen=True)
class Caller:
    """Who is calling: the key's name (what impressions and logs are attributed to) and its roles."""

    name: str
    roles: frozenset[Role]

    def may(self, role: Role) -> bool:
        return role in self.roles


@dataclass(frozen=True)
class ApiKey:
    name: str
    roles: frozenset[Role]
    secret: str | None = None  # the key's value (matched against X-Api-Key); None when only its id is known
    key_id: str | None = None  # API Gateway's id of the key (requestContext.identity.apiKeyId)


@dataclass(frozen=True)
class Limits:
    """Per key: a sustained rate with a burst (token bucket), and requests per UTC day (None: unlimited)."""

    rate_per_s: float | None = None
    burst: int = 0
    daily_quota: int | None = None


@dataclass
class _Usage:
    tokens: float
    refilled_at: float
    day: int
    used_today: int = 0


@dataclass
class RateLimiter:
    """A token bucket and a daily counter per key name, in this process."""

    limits: Limits
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time
    _usage: dict[str, _Usage] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def active(self) -> bool:
        return self.limits.rate_per_s is not None or self.limits.daily_quota is not None

    def take(self, name: str) -> None:
        """Count one request for `name`; ThrottledError when its bucket or its quota is empty."""
        if not self.active:
            return
        limits, now, day = self.limits, self.clock(), int(self.wall_clock() // 86_400)
        capacity = float(max(limits.burst, 1))
        with self._lock:
            usage = self._usage.get(name)
            if usage is None:
                usage = self._usage[name] = _Usage(tokens=capacity, refilled_at=now, day=day)
            if usage.day != day:
                usage.day, usage.used_today = day, 0
            if limits.daily_quota is not None and usage.used_today >= limits.daily_quota:
                raise ThrottledError(
                    f"the daily quota of {limits.daily_quota} requests for this key is used up",
                    retry_after_s=(day + 1) * 86_400 - self.wall_clock(),
                )
            if limits.rate_per_s is not None:
                usage.tokens = min(capacity, usage.tokens + (now - usage.refilled_at) * limits.rate_per_s)
                usage.refilled_at = now
                if usage.tokens < 1.0:
                    raise ThrottledError(
                        f"more than {limits.rate_per_s:g} requests/s with this key",
                        retry_after_s=(1.0 - usage.tokens) / limits.rate_per_s,
                    )
                usage.tokens -= 1.0
            usage.used_today += 1


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class AccessPolicy:
    """Finds the caller of a request and checks its role and its limits.

    `require_keys`: False lets a request without any key through as `anonymous` with `anonymous_roles` (the local
    API on loopback, so the README's first `curl` works); a key that is presented is always checked, and the admin
    role always needs one."""

    def __init__(
        self,
        keys: Iterable[ApiKey],
        *,
        require_keys: bool,
        limiter: RateLimiter | None = None,
        anonymous_roles: frozenset[Role] = frozenset({Role.READ, Role.EVENTS}),
    ) -> None:
        self._keys = tuple(keys)
        self._by_digest = {_digest(k.secret): k for k in self._keys if k.secret}
        self._by_id = {k.key_id: k for k in self._keys if k.key_id}
        self.require_keys = require_keys
        self._anonymous = Caller(ANONYMOUS, anonymous_roles - {Role.ADMIN})
        self._limiter = limiter

    @property
    def keys(self) -> tuple[ApiKey, ...]:
        return self._keys

    def identify(self, presented: str | None, gateway_key_id: str | None = None) -> Caller:
        """The caller behind a key value or an API Gateway key id; UnauthorizedError for an unknown one."""
        key: ApiKey | None = None
        if gateway_key_id:
            key = self._by_id.get(gateway_key_id)
        elif presented:
            found = self._by_digest.get(_digest(presented))
            # The dict lookup is on a digest; compare the values in constant time as well.
            if (
                found is not None
                and found.secret is not None
                and secrets.compare_digest(found.secret.encode(), presented.encode())
            ):
                key = found
        if key is not None:
            return Caller(key.name, key.roles)
        if presented or gateway_key_id:
            raise UnauthorizedError("the API key is not valid")
        if self.require_keys:
            raise UnauthorizedError("this route needs an API key in the X-Api-Key header")
        return self._anonymous

    def authorize(self, caller: Caller, role: Role) -> Caller:
        """Check `caller` may act in `role`, then count the request against its limits."""
        if not caller.may(role):
            if caller.name == ANONYMOUS:
                raise UnauthorizedError(f"this route needs an API key with the {role.value} role in the X-Api-Key header")
            raise ForbiddenError(f"this API key does not have the {role.value} role")
        if self._limiter is not None:
            self._limiter.take(caller.name)
        return caller


def local_keys(secrets_by_role: Mapping[str, str]) -> list[ApiKey]:
    """The local keys file's keys (`{"admin": ..., "events": ..., "read": ...}`), each named by its role."""
    return [
        ApiKey(name=role.value, roles=ROLE_GRANTS[role], secret=secrets_by_role[role.value])
        for role in Role
        if secrets_by_role.get(role.value)
    ]


def gateway_keys(roles_by_key_id: Mapping[str, Iterable[str]]) -> list[ApiKey]:
    """API Gateway's keys by id (`RTREC_API_KEY_ROLES`), each named by its id; ValueError for an unknown role."""
    keys = []
    for key_id, roles in roles_by_key_id.items():
        keys.append(ApiKey(name=f"apikey:{key_id}", roles=frozenset(Role(r) for r in roles), key_id=key_id))
    return keys


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
