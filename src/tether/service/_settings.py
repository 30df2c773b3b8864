"""Service settings: one pydantic model tree, read from a TOML file and ``TETHER_*`` variables.

Precedence (highest first): explicit overrides (CLI flags), environment (``TETHER_PORT``,
``TETHER_SESSIONS__MAX_ATTEMPTS`` for nested fields), the TOML file, defaults. Errors are raised as
:class:`tether.ConfigError` whose message names every bad field and says what it must be.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .._errors import ConfigError
from ._config_model import AlertSettings, RecoverySettings, SupervisorSettings

__all__ = ["Settings", "SessionDefaults", "WebhookSettings", "load_settings", "is_loopback"]


class SessionDefaults(BaseModel):
    """Defaults every session starts from; a session's own options override them."""

    model_config = ConfigDict(extra="forbid")

    heartbeat_interval: float = Field(20.0, gt=0, description="seconds between heartbeats")
    heartbeat_timeout: float = Field(10.0, gt=0, description="seconds to wait for a heartbeat answer")
    connect_timeout: float = Field(10.0, gt=0, description="seconds one connection attempt may take")
    max_attempts: int | None = Field(10, ge=1, description="reconnect attempts before giving up (None: never)")
    backoff_base: float = Field(3.0, gt=0, description="first reconnect delay (seed 000: 3 s)")
    backoff_cap: float = Field(60.0, gt=0, description="largest reconnect delay (seed 000: 60 s)")
    stuck_after: float = Field(120.0, gt=0, description="the sweep restarts a session down this long")
    heartbeat_stale_after: float = Field(
        90.0, gt=0, description="the sweep restarts a connected session with no heartbeat this long"
    )
    max_queue_depth: int = Field(10_000, ge=1, description="outbox depth the sweep reports as a backlog")
    send_batch: int = Field(32, ge=1, le=1000, description="messages leased per delivery round")
    send_timeout: float = Field(10.0, gt=0, description="seconds one upstream send may take")
    connect_rate: float = Field(
        100.0, gt=0, description="connection attempts per second across all sessions (no stampede after a restart)"
    )
    connect_burst: int = Field(20, ge=1, description="attempts allowed back to back before connect_rate applies")
    outbox_max_attempts: int | None = Field(
        25, ge=1, description="failed sends before a message moves to the dead letters (None: never)"
    )


class WebhookSettings(BaseModel):
    """Inbound delivery to webhook URLs."""

    model_config = ConfigDict(extra="forbid")

    secret: SecretStr | None = Field(None, description="HMAC-SHA256 key (generated in data_dir when unset)")
    timeout: float = Field(10.0, gt=0, description="seconds one webhook POST may take")
    max_attempts: int = Field(8, ge=1, le=100, description="POSTs of one message before it is dead")
    backoff_base: float = Field(0.5, gt=0, description="first retry delay, seconds")
    backoff_cap: float = Field(60.0, gt=0, description="largest retry delay, seconds")


class Settings(BaseSettings):
    """Everything ``tether serve`` needs. Safe defaults: loopback only, data under ``./.tether``."""

    model_config = SettingsConfigDict(
        env_prefix="TETHER_",
        env_nested_delimiter="__",
        env_parse_none_str="null",  # TETHER_SESSIONS__MAX_ATTEMPTS=null: never give up (as null in the API)
        extra="forbid",
        validate_default=True,
    )

    host: str = Field("127.0.0.1", description="address to bind; beyond loopback a token is required")
    port: int = Field(8080, ge=0, le=65535, description="TCP port (0: any free port)")
    token: SecretStr | None = Field(None, description="bearer token for the API (TETHER_TOKEN)")
    data_dir: Path = Field(Path(".tether"), description="where the SQLite files live")
    sweep_interval: float = Field(300.0, gt=0, description="seconds between health sweeps")
    restart_delay: float = Field(2.0, ge=0, description="seconds between close and reconnect on restart")
    max_message_bytes: int = Field(1_048_576, ge=1, description="largest request body accepted (413 above)")
    shutdown_timeout: float = Field(10.0, gt=0, description="seconds to drain in-flight sends on shutdown")
    event_log_size: int = Field(10_000, ge=10, description="events kept for SSE resume")
    log_format: Literal["human", "json"] = Field("human", description="console log lines: human or JSON")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="console log level")
    sessions: SessionDefaults = Field(default_factory=SessionDefaults)
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)
    recovery: RecoverySettings = Field(default_factory=RecoverySettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    supervisor: SupervisorSettings = Field(default_factory=SupervisorSettings)
    # Scale-out (docs/scaleout.md): sessions, queues and ownership shared through one Redis.
    store: str | None = Field(None, description="redis://host:6379/0 to run as one node of a cluster (default: SQLite in data_dir)")
    node_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="this node's id (default: hostname-pid)")
    lease_ttl: float = Field(10.0, ge=1.0, description="seconds a dead node's sessions wait before another node takes them")
    public_url: str | None = Field(None, description="this node's base URL as the other nodes reach it (forwarding)")

    # The TOML path is not a setting itself; load_settings() passes it through this class attribute.
    toml_file: ClassVar[Path | None] = None
    # ... and the explicit overrides (CLI flags), so a config reload from the file keeps them.
    overrides: ClassVar[dict[str, Any]] = {}

    @field_validator("host")
    @classmethod
    def _host_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must be an address such as 127.0.0.1 or 0.0.0.0")
        return v.strip()

    @field_validator("token")
    @classmethod
    def _token_strength(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) < 8:
            raise ValueError("must be at least 8 characters (use a random string)")
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls.toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls.toml_file))
        return tuple(sources)

    @property
    def loopback_only(self) -> bool:
        """True when the bind address is reachable from this machine only."""
        return is_loopback(self.host)

    def check_can_serve(self) -> None:
        """Raise ConfigError when the service must not start (beyond loopback without a token)."""
        if not self.loopback_only and self.token is None:
            raise ConfigError(
                f"refusing to bind {self.host}:{self.port} without a token: anyone on the network could "
                "drive your sessions. Set TETHER_TOKEN (8+ random characters) or bind 127.0.0.1."
            )


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or ``localhost``."""
    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "settings"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown setting (check the spelling)"
        parts.append(f"{field}: {msg}")
    return "invalid configuration: " + "; ".join(parts)


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Read settings from ``config_file`` (TOML, optional), ``TETHER_*`` variables and ``overrides``.

    Raises:
        ConfigError: a value is invalid or the file cannot be read; the message names the field.
    """
    path = None
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist (pass --config with a TOML file)")
    clean = {k: v for k, v in overrides.items() if v is not None}

    # A subclass per call keeps the TOML path out of the shared class (tests load many configs).
    cls = type("Settings", (Settings,), {"toml_file": path, "overrides": clean})
    try:
        return cls(**clean)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    except (OSError, ValueError) as exc:  # unreadable file, bad TOML syntax
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc}") from exc
