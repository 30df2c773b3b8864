"""The sections of :class:`tether.service.Settings` beyond the service itself: recovery, alerts
(rules' tuning and notification destinations) and the process supervisor.

They hang off the one Settings tree (``[recovery]``, ``[alerts]``, ``[supervisor]`` in the TOML
file; ``TETHER_ALERTS__TELEGRAM__BOT_TOKEN`` and so on in the environment), so one schema, one
validation and one version history cover everything an operator can tune.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

__all__ = [
    "AlertSettings", "AlertWebhookSettings", "ClassPolicySettings", "EmailSettings", "RecoverySettings",
    "RuleTuning", "SupervisorSettings", "TelegramAlertSettings", "alert_actions",
]

_ERROR_CLASSES = ("flood_wait", "rate_limit", "proxy", "connection", "auth", "temporary", "permanent", "unknown")
_ACTIONS = ("retry", "wait", "reconnect", "rotate_proxy", "relogin", "fail")


class ClassPolicySettings(BaseModel):
    """How one error class is recovered (see ``tether.recovery.ClassPolicy``)."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["retry", "wait", "reconnect", "rotate_proxy", "relogin", "fail"] = Field(..., description="what the engine does")
    max_retries: int = Field(0, ge=0, le=1000, description="retries before giving up")
    delay: float = Field(1.0, ge=0, description="first backoff step in seconds")
    factor: float = Field(2.0, ge=1, description="growth per retry (1.0: a fixed delay)")


class RecoverySettings(BaseModel):
    """The recovery engine (``tether.recovery.RecoveryPolicy``) built from settings."""

    model_config = ConfigDict(extra="forbid")

    max_wait: float = Field(3600.0, gt=0, description="longest server-named wait honoured, seconds")
    cap: float = Field(300.0, gt=0, description="largest backoff step, seconds")
    jitter: Literal["full", "equal", "none"] = Field("equal", description="randomness of backoff steps")
    wait_jitter: float = Field(1.0, ge=0, description="random seconds added to a server-named wait")
    deadline: float | None = Field(None, gt=0, description="give up one call after this many seconds (None: never)")
    classes: dict[str, ClassPolicySettings] = Field(
        default_factory=dict, description="per error class overrides of DEFAULT_CLASS_POLICIES (flood_wait, ...)")

    @field_validator("classes")
    @classmethod
    def _known_classes(cls, v: dict[str, ClassPolicySettings]) -> dict[str, ClassPolicySettings]:
        unknown = sorted(set(v) - set(_ERROR_CLASSES))
        if unknown:
            raise ValueError(f"unknown error class {unknown[0]!r}; use one of {', '.join(_ERROR_CLASSES)}")
        return v

    def policy_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``RecoveryPolicy(...)`` (classes merged over the defaults)."""
        from .._decision import Action, ErrorClass
        from ..recovery._engine import DEFAULT_CLASS_POLICIES, ClassPolicy

        classes = dict(DEFAULT_CLASS_POLICIES)
        for name, c in self.classes.items():
            classes[ErrorClass(name)] = ClassPolicy(Action[c.action.upper()], max_retries=c.max_retries,
                                                    delay=c.delay, factor=c.factor)
        return dict(classes=classes, max_wait=self.max_wait, cap=self.cap, jitter=self.jitter,
                    wait_jitter=self.wait_jitter, deadline=self.deadline)


class RuleTuning(BaseModel):
    """Overrides for one alert rule (by name); unset fields keep the rule's value."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    threshold: float | None = Field(None, description="the value the metric is compared with")
    for_: float | None = Field(None, ge=0, alias="for", description="seconds the condition must hold")
    keep_firing_for: float | None = Field(None, ge=0, description="seconds it stays firing after it clears")
    repeat_interval: float | None = Field(None, gt=0, description="seconds between repeated notifications")
    severity: Literal["info", "warning", "critical"] | None = None
    enabled: bool | None = Field(None, description="false: the rule is not evaluated")


class AlertWebhookSettings(BaseModel):
    """One webhook destination for alert notifications."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("webhook", min_length=1, max_length=64, description="the action name rules refer to")
    url: SecretStr = Field(..., description="receiver URL (kept secret: chat webhooks carry their key in the path)")
    secret: SecretStr | None = Field(None, description="HMAC key: adds X-Tether-Signature")

    @field_validator("url")
    @classmethod
    def _http(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value().startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v


class EmailSettings(BaseModel):
    """SMTP destination for alert notifications (used when ``host`` and ``to`` are set)."""

    model_config = ConfigDict(extra="forbid")

    host: str | None = Field(None, description="SMTP server")
    port: int = Field(25, ge=1, le=65535)
    username: str | None = Field(None, description="SMTP login")
    password: SecretStr | None = None
    sender: str = Field("tether@localhost", description="the From address")
    to: list[str] = Field(default_factory=list, description="recipients")
    starttls: bool = Field(False, description="upgrade the connection with STARTTLS")
    use_ssl: bool = Field(False, description="connect with TLS (port 465)")


class TelegramAlertSettings(BaseModel):
    """Telegram destination for alert notifications (used when ``bot_token`` and ``chat_id`` are set)."""

    model_config = ConfigDict(extra="forbid")

    api_base: str = Field("https://api.telegram.org", description="Bot API root")
    bot_token: SecretStr | None = Field(None, description="the alerting bot's token")
    chat_id: int | str | None = Field(None, description="where alerts go")

    @field_validator("api_base")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")


class AlertSettings(BaseModel):
    """Alert evaluation, rule tuning and where notifications go."""

    model_config = ConfigDict(extra="forbid")

    interval: float = Field(15.0, gt=0, description="seconds between rule evaluations")
    rules: dict[str, RuleTuning] = Field(
        default_factory=dict, description="per rule overrides, e.g. [alerts.rules.SessionDown] for = 60")
    webhooks: list[AlertWebhookSettings] = Field(default_factory=list, description="webhook destinations")
    email: EmailSettings = Field(default_factory=EmailSettings)
    telegram: TelegramAlertSettings = Field(default_factory=TelegramAlertSettings)


class SupervisorSettings(BaseModel):
    """Defaults for ``tether supervise`` (its own TOML/CLI values override them)."""

    model_config = ConfigDict(extra="forbid")

    restart: Literal["always", "on-failure", "never"] = Field("always", description="when a child is restarted")
    backoff_initial: float = Field(1.0, gt=0)
    backoff_factor: float = Field(2.0, ge=1)
    backoff_max: float = Field(60.0, gt=0)
    min_uptime: float = Field(30.0, ge=0, description="seconds up that count as a good start")
    max_restarts: int = Field(10, ge=1, description="restarts within window before a cooldown")
    window: float = Field(60.0, gt=0, description="seconds max_restarts is counted over")
    cooldown: float = Field(300.0, ge=0)
    kill_timeout: float = Field(10.0, gt=0)
    health_interval: float = Field(10.0, gt=0)
    health_failures: int = Field(3, ge=1)


def alert_actions(alerts: AlertSettings) -> list[Any]:
    """The alert actions (webhook, email, Telegram) that ``alerts`` configures."""
    from ..observe import EmailAction, TelegramAction, WebhookAction

    out: list[Any] = []
    for w in alerts.webhooks:
        out.append(WebhookAction(w.url.get_secret_value(), name=w.name,
                                 secret=w.secret.get_secret_value() if w.secret else None))
    e = alerts.email
    if e.host and e.to:
        out.append(EmailAction(e.host, e.port, sender=e.sender, to=e.to, username=e.username,
                               password=e.password.get_secret_value() if e.password else None,
                               starttls=e.starttls, use_ssl=e.use_ssl))
    t = alerts.telegram
    if t.bot_token is not None and t.chat_id is not None:
        out.append(TelegramAction(t.bot_token.get_secret_value(), t.chat_id, api_base=t.api_base))
    return out
