"""The paging bridge's routing file (``FLEETPULSE_PAGER_CONFIG``): receivers, routes, retries.

Secrets (PagerDuty routing keys, Slack webhook URLs, webhook signing secrets) are never in the
file: it names the environment variable that holds each one (``*_env``), read once at start.

Example::

    receivers:
      - name: alertmanager
        alertmanager: {url: http://127.0.0.1:9093}
      - name: oncall
        pagerduty: {routing_key_env: PD_ROUTING_KEY}
      - name: team-chat
        slack: {webhook_url_env: SLACK_WEBHOOK_URL}
      - name: automation
        webhook: {url: https://hooks.example.com/fleetpulse, secret_env: HOOK_SECRET}
      - name: local-log
        file: {path: /var/log/fleetpulse/pages.jsonl}   # one JSON line per event (the demo's)
    routes:                          # first match wins, unless `continue: true`
      - match: {severity: critical}  # label globs; severity, alertname and kind are labels too
        receivers: [oncall, team-chat]
        continue: true
      - match: {team: support}
        receivers: [team-chat]
    default_receivers: [alertmanager]   # alerts no route matched
    retry: {attempts: 8, initial_s: 0.5, max_s: 30}
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from fleetpulse.contract.alert_rules import labels_match
from fleetpulse.contract.errors import ConfigError
from fleetpulse.contract.policy import invalid


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AlertmanagerSpec(_Strict):
    url: str = Field(pattern=r"^https?://")


class PagerDutySpec(_Strict):
    routing_key_env: str
    url: str = Field("https://events.pagerduty.com/v2/enqueue", pattern=r"^https?://")


class SlackSpec(_Strict):
    webhook_url_env: str


class WebhookSpec(_Strict):
    url: str = Field(pattern=r"^https?://")
    secret_env: str | None = None


class FileSpec(_Strict):
    path: Path


_KINDS = ("alertmanager", "pagerduty", "slack", "webhook", "file")


class ReceiverSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    alertmanager: AlertmanagerSpec | None = None
    pagerduty: PagerDutySpec | None = None
    slack: SlackSpec | None = None
    webhook: WebhookSpec | None = None
    file: FileSpec | None = None
    timeout_s: float = Field(5.0, gt=0, le=60)

    @model_validator(mode="after")
    def _one(self) -> ReceiverSpec:
        kinds = [k for k in _KINDS if getattr(self, k)]
        if len(kinds) != 1:
            raise ValueError(f"receiver {self.name}: give exactly one of {', '.join(_KINDS)}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in _KINDS if getattr(self, k))


class RouteSpec(_Strict):
    match: dict[str, str] = Field(default_factory=dict)
    receivers: tuple[str, ...] = Field(min_length=1)
    continue_: bool = Field(False, alias="continue")

    def matches(self, labels: Mapping[str, str]) -> bool:
        return labels_match(self.match, labels)


class RetrySpec(_Strict):
    attempts: int = Field(default=8, ge=1, le=100)
    initial_s: float = Field(default=0.5, gt=0)
    max_s: float = Field(default=30.0, gt=0)


class PagerConfig(_Strict):
    receivers: tuple[ReceiverSpec, ...] = Field(min_length=1)
    routes: tuple[RouteSpec, ...] = ()
    default_receivers: tuple[str, ...] = ()
    retry: RetrySpec = RetrySpec()
    # secrets resolved at load (env var name -> value); not part of the file
    secrets: dict[str, SecretStr] = Field(default_factory=dict, exclude=True)

    @model_validator(mode="after")
    def _known(self) -> PagerConfig:
        names = {r.name for r in self.receivers}
        if len(names) != len(self.receivers):
            raise ValueError("receiver names must be unique")
        for i, route in enumerate(self.routes):
            for name in route.receivers:
                if name not in names:
                    raise ValueError(
                        f"routes.{i}: no receiver named {name!r} (have {sorted(names)})"
                    )
        for name in self.default_receivers:
            if name not in names:
                raise ValueError(f"default_receivers: no receiver named {name!r}")
        return self

    def receiver(self, name: str) -> ReceiverSpec:
        return next(r for r in self.receivers if r.name == name)

    def route(self, labels: Mapping[str, str]) -> list[str]:
        """The receivers of an alert with these labels, in route order, without repeats."""
        out: list[str] = []
        for route in self.routes:
            if route.matches(labels):
                out += [r for r in route.receivers if r not in out]
                if not route.continue_:
                    return out
        return out or list(self.default_receivers)

    def secret(self, env_name: str) -> str:
        return self.secrets[env_name].get_secret_value()


def load_pager_config(path: Path, environ: Mapping[str, str] | None = None) -> PagerConfig:
    """Read and validate the routing file, and the secrets it names from ``environ``.

    Raises:
        ConfigError: naming the file, the field, or the missing environment variable.
    """
    env = os.environ if environ is None else environ
    try:
        raw: Any = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(
            f"FLEETPULSE_PAGER_CONFIG={path}: cannot read it ({exc.strerror})", field="pager_config"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}", field="pager_config") from None
    try:
        cfg = PagerConfig.model_validate(raw or {})
    except ValidationError as exc:
        raise invalid(exc, f"{path}: invalid pager config", str(path)) from None
    secrets = {}
    for r in cfg.receivers:
        for name in (
            r.pagerduty.routing_key_env if r.pagerduty else None,
            r.slack.webhook_url_env if r.slack else None,
            r.webhook.secret_env if r.webhook else None,
        ):
            if name is None:
                continue
            if not env.get(name):
                raise ConfigError(
                    f"{path}: receiver {r.name} reads its secret from ${name}, which is not set. "
                    f"Fix: export {name}=...",
                    field=name,
                )
            secrets[name] = SecretStr(env[name])
    return cfg.model_copy(update={"secrets": secrets})
