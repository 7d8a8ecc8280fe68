"""API keys from a file (``serve --api-keys FILE``): stored as SHA-256 hashes, each with scopes and
a request rate, re-read when the file changes (rotation without a restart).

The file (YAML)::

    keys:
      - id: reporting-app              # what the audit log and errors name; never the key
        sha256: 9f86d081884c7d65...     # printf '%s' "$KEY" | sha256sum
        scopes: [infer, embed]          # infer: classify, ner, completions, chat, models;
                                        # embed: embeddings; admin: adapters and /metrics;
                                        # ui: lmforge ui --api-keys (the dashboard)
        requests_per_minute: 120        # optional; beyond it, 429 with Retry-After
        tokens_per_minute: 20000        # optional token quotas (prompt + completion tokens)
        tokens_per_day: 1000000

A request's key is hashed and looked up; a key without the route's scope gets 403, one over its
rate 429. Token quotas are token buckets (full at start, refilled evenly over the minute or the
day): a request is admitted while its key's buckets are above zero, and charged the tokens it used
(the ``usage`` of its answer, prompt and completion, also when its client left early) when it ends,
so one long answer may take a bucket below zero and the key waits (429 with ``Retry-After``) until
it refills. Limits hold per server process: with ``--workers N`` a key may get up to N times them. A file that no longer reads after a change is refused with an error in the log and the
keys before it stay in force.
"""

import hashlib
import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from lmforge.errors import ConfigError

log = logging.getLogger("lmforge.serve")
SCOPES = ("infer", "embed", "admin", "ui")
RELOAD_CHECK_S = 1.0
RATES = ("requests_per_minute", "tokens_per_minute", "tokens_per_day")
FIELDS = ("id", "sha256", "scopes", *RATES)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def scope_for(path: str) -> str:
    """The scope a route needs."""
    if path.startswith("/v1/admin/") or path == "/metrics":
        return "admin"
    if path.startswith("/v1/embeddings"):
        return "embed"
    return "infer"


@dataclass(frozen=True)
class KeyEntry:
    id: str
    sha256: str
    scopes: frozenset[str]
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    tokens_per_day: int | None = None

    def token_limits(self) -> list[tuple[str, int, float]]:
        """(what, capacity, seconds to refill it) of each token quota the key has."""
        limits = [("minute", self.tokens_per_minute, 60.0), ("day", self.tokens_per_day, 86400.0)]
        return [(what, n, s) for what, n, s in limits if n is not None]


@dataclass(frozen=True)
class Refusal:
    """Why a key may not make a request now, and the seconds until it may."""

    wait: float
    limit: str  # "120 requests per minute", "20000 tokens per day"


def read_keys(path: Path) -> dict[str, KeyEntry]:
    """hash -> entry, or a ConfigError naming the file and the entry."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"--api-keys {path}: cannot read it ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--api-keys {path}: not YAML ({str(exc).splitlines()[0]})") from None
    rows = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not rows:
        raise ConfigError(f"--api-keys {path}: give a list under 'keys' (id, sha256, scopes)")
    entries: dict[str, KeyEntry] = {}
    ids: set[str] = set()
    for i, row in enumerate(rows):
        where = f"--api-keys {path}: keys[{i}]"
        if not isinstance(row, dict):
            raise ConfigError(f"{where}: give id, sha256 and scopes")
        unknown = set(row) - set(FIELDS)
        if unknown:
            raise ConfigError(f"{where}: unknown field {sorted(unknown)[0]!r} ({', '.join(FIELDS)})")
        ident, digest, scopes = row.get("id"), str(row.get("sha256", "")).lower(), row.get("scopes")
        rate = row.get("requests_per_minute")
        if not isinstance(ident, str) or not ident:
            raise ConfigError(f"{where}: 'id' must be a name")
        if ident in ids:
            raise ConfigError(f"{where}: id {ident!r} is used twice")
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ConfigError(
                f"{where} ({ident}): 'sha256' must be the key's SHA-256 in hex (printf '%s' KEY | sha256sum)"
            )
        if not isinstance(scopes, list) or not scopes or any(s not in SCOPES for s in scopes):
            raise ConfigError(f"{where} ({ident}): 'scopes' must list some of {', '.join(SCOPES)}")
        for name in RATES:
            value = row.get(name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"{where} ({ident}): {name!r} must be a whole number of at least 1")
        if digest in entries:
            raise ConfigError(f"{where} ({ident}): the same key as {entries[digest].id!r}")
        ids.add(ident)
        entries[digest] = KeyEntry(
            ident, digest, frozenset(scopes), rate, row.get("tokens_per_minute"), row.get("tokens_per_day")
        )
    return entries


class KeyFile:
    """The keys of a file, re-read when its modification time changes (checked once a second)."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        self.entries = read_keys(self.path)  # a bad file fails at start-up, in one line
        self._mtime = self._stat()
        self._checked = time.monotonic()
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # id -> (requests left, at)
        self._token_buckets: dict[tuple[str, str], tuple[float, float]] = {}  # (id, window) -> (tokens, at)

    def _stat(self) -> float | None:
        try:
            return self.path.stat().st_mtime_ns
        except OSError:
            return None

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked < RELOAD_CHECK_S:
            return
        self._checked = now
        mtime = self._stat()
        if mtime == self._mtime:
            return
        self._mtime = mtime
        try:
            self.entries = read_keys(self.path)
            log.info('{"event": "api keys reloaded", "keys": %d}', len(self.entries))
        except ConfigError as exc:
            log.error("%s; the keys before it stay in force", exc)

    def lookup(self, presented: str) -> KeyEntry | None:
        with self._lock:
            self._maybe_reload()
            return self.entries.get(hash_key(presented))

    def admit(self, entry: KeyEntry) -> Refusal | None:
        """None when the key may make a request now (and one request is counted), else why not and
        for how long: a token quota at or below zero, or ``requests_per_minute`` spent (token
        buckets, full at start)."""
        with self._lock:
            now = time.monotonic()
            for what, capacity, seconds in entry.token_limits():
                left = self._tokens_left(entry.id, what, capacity, seconds, now)
                if left <= 0:
                    return Refusal(
                        max(1.0, math.ceil((1.0 - left) * seconds / capacity)), f"{capacity} tokens per {what}"
                    )
            rate = entry.requests_per_minute
            if rate is None:
                return None
            tokens, at = self._buckets.get(entry.id, (float(rate), now))
            tokens = min(float(rate), tokens + (now - at) * rate / 60.0)
            if tokens >= 1.0:
                self._buckets[entry.id] = (tokens - 1.0, now)
                return None
            self._buckets[entry.id] = (tokens, now)
            return Refusal(max(1.0, math.ceil((1.0 - tokens) * 60.0 / rate)), f"{rate} requests per minute")

    def charge(self, entry: KeyEntry, tokens: int) -> None:
        """Take the ``tokens`` a request used from the key's token quotas (they may go below zero)."""
        if tokens <= 0:
            return
        with self._lock:
            now = time.monotonic()
            for what, capacity, seconds in entry.token_limits():
                left = self._tokens_left(entry.id, what, capacity, seconds, now)
                self._token_buckets[(entry.id, what)] = (left - tokens, now)

    def _tokens_left(self, ident: str, what: str, capacity: int, seconds: float, now: float) -> float:
        left, at = self._token_buckets.get((ident, what), (float(capacity), now))
        left = min(float(capacity), left + (now - at) * capacity / seconds)
        self._token_buckets[(ident, what)] = (left, now)
        return left
