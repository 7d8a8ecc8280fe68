"""``UiSettings``: every ``lmforge ui`` flag, its type, default and help in one place (the CLI's
options are derived from it, as ``serve``'s are from ``ServeSettings``)."""

import math
from dataclasses import dataclass, field

from lmforge.errors import ConfigError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class UiSettings:
    runs: str = field(
        default="runs",
        metadata={"help": "the folder of run folders to show; jobs started from the page write there (default: runs)"},
    )
    host: str = field(default="127.0.0.1", metadata={"help": "address to bind (default: loopback only)"})
    port: int = 7860
    api_key: str | None = field(
        default=None,
        metadata={"help": "require 'Authorization: Bearer KEY' on every API call (default: $LMFORGE_API_KEY)"},
    )
    api_keys: str | None = field(
        default=None,
        metadata={
            "help": "a YAML file of hashed keys (as serve's); a key needs the 'ui' scope (reloaded when it changes)"
        },
    )
    allow_insecure: bool = field(default=False, metadata={"help": "allow a non-loopback host without a key"})
    configs: list[str] = field(
        default_factory=lambda: ["examples"],
        metadata={"help": "a folder whose YAML configs the job form offers (repeatable; default: examples)"},
    )
    max_jobs: int = field(default=1, metadata={"help": "training jobs running at once (default: 1)"})
    max_body_bytes: int = 1024 * 1024
    threads: int | None = field(default=None, metadata={"help": "CPU threads for the playground (default: all)"})
    device: str = field(default="auto", metadata={"help": "the playground's device: auto, cpu, cuda, cuda:N"})
    poll_s: float = field(default=2.0, metadata={"help": "how often the page refreshes live views (seconds)"})

    def check(self) -> None:
        if self.api_key and self.api_keys:
            raise ConfigError("ui: give --api-key or --api-keys FILE, not both")
        if self.host not in LOOPBACK and not self.api_key and not self.api_keys and not self.allow_insecure:
            raise ConfigError(
                f"ui: binding to {self.host} without an API key would let anyone on the network read the "
                "runs and start jobs; set --api-key (or LMFORGE_API_KEY), or pass --allow-insecure"
            )
        if not 0 < self.port < 65536:
            raise ConfigError(f"ui: port {self.port}: give 1..65535")
        for name in ("max_jobs", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"ui: {name.replace('_', '-')} must be at least 1")
        if not (math.isfinite(self.poll_s) and self.poll_s >= 0.2):
            raise ConfigError(f"ui: poll-s {self.poll_s}: give at least 0.2 seconds")
