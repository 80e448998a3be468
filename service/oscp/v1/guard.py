"""What every OSCP request passes before a handler runs: credentials and the rate limit.

Credentials are scrypt-hashed in the database, which costs tens of milliseconds per check; a
CPO sends credentials with every call, so a verified pair is remembered for a short while,
keyed by username and compared as a keyed hash in constant time. A changed password takes
effect on other processes when that memory expires (`CREDENTIAL_TTL`).
"""

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

CREDENTIAL_TTL_S = 60.0
MAX_KEYS = 10_000  # rate-limit buckets kept before idle ones are dropped


class CredentialCache:
    def __init__(self, verify: Callable[[str, str], str], *, ttl_s: float = CREDENTIAL_TTL_S) -> None:
        self._verify = verify  # (username, password) -> cpo id, or raises NotAuthorized
        self._ttl_s = ttl_s
        self._key = secrets.token_bytes(32)  # per process: the cache never holds a reusable secret
        self._lock = threading.Lock()
        self._known: dict[str, tuple[bytes, str, float]] = {}

    def cpo_of(self, username: str, password: str) -> str:
        digest = hmac.new(self._key, f"{username}\x00{password}".encode(), hashlib.sha256).digest()
        with self._lock:
            known = self._known.get(username)
        if known is not None:
            known_digest, cpo_id, expires = known
            if time.monotonic() < expires and hmac.compare_digest(digest, known_digest):
                return cpo_id
        cpo_id = self._verify(username, password)  # raises NotAuthorized
        with self._lock:
            self._known[username] = (digest, cpo_id, time.monotonic() + self._ttl_s)
        return cpo_id

    def forget(self) -> None:
        with self._lock:
            self._known.clear()


class RateLimited(Exception):
    def __init__(self, retry_after_s: int, per_minute: int) -> None:
        super().__init__(
            f"rate limit exceeded: at most {per_minute} OSCP requests per minute; retry after {retry_after_s} s"
        )
        self.retry_after_s = retry_after_s


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """A token bucket per key (a CPO, or a client address that failed to authenticate): a burst
    of one minute's allowance, refilled evenly. Per server process."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._rate = per_minute / 60.0
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key: str) -> None:
        """Spend one request of `key`'s allowance, or raise RateLimited."""
        self._refill(key, spend=1)

    def check(self, key: str) -> None:
        """Raise RateLimited if `key` has nothing left, without spending anything."""
        self._refill(key, spend=0)

    def _refill(self, key: str, *, spend: int) -> None:
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= MAX_KEYS:  # addresses come and go: forget the full buckets
                    self._buckets = {k: b for k, b in self._buckets.items() if b.tokens < self.per_minute}
                bucket = self._buckets[key] = _Bucket(float(self.per_minute), now)
            bucket.tokens = min(float(self.per_minute), bucket.tokens + (now - bucket.at) * self._rate)
            bucket.at = now
            if bucket.tokens < 1:
                raise RateLimited(max(1, int((1 - bucket.tokens) / self._rate + 0.999)), self.per_minute)
            bucket.tokens -= spend
