"""The ``notify:`` and ``metrics:`` sections of the nightly YAML, read into small frozen dataclasses.

::

    notify:
      base_url: https://ctrlens.example.com      # links in messages open this dashboard
      max_age_days: 3                            # a backfill of older days pages nobody (default: no limit)
      retry: {attempts: 3, backoff_s: 2, max_backoff_s: 900}
      channels:
        - name: team-slack
          type: webhook                           # an HTTP POST of JSON
          format: slack                           # slack (incoming-webhook blocks) | json (the alert rows)
          url_env: SLACK_WEBHOOK_URL              # the secret URL comes from this environment variable
          min_severity: warning                   # critical | warning | info
          models: [din-prod]                      # default: every model
        - name: oncall-mail
          type: email                             # one digest per run
          smtp: {host: smtp.example.com, port: 587, security: starttls, username: ctrlens, password_env: SMTP_PASSWORD}
          from: ctrlens@example.com
          to: [oncall@example.com]
        - name: pager
          type: command                           # the payload (JSON) on the program's stdin
          command: [/usr/local/bin/page-oncall, --service, ctr]
          min_severity: critical
    metrics:
      textfile: /var/lib/node_exporter/textfile/ctrlens.prom

Secrets (webhook URLs, header values, SMTP passwords) are never written in the file: the file names
the environment variables that hold them (``*_env`` keys), read only when a message is sent; the
configuration stored with each run therefore holds names, not secrets.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from ctrlens.errors import InputError

CHANNEL_TYPES = ("webhook", "email", "command")
FORMATS = ("slack", "json")
SECURITY = ("starttls", "tls", "none")
SEVERITY_LEVEL = {"info": 1, "warning": 2, "critical": 3}
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NAME = re.compile(r"^[A-Za-z0-9_.:@/-]{1,200}$")


class NotifyConfigError(InputError):
    """A ``notify:`` / ``metrics:`` section that cannot be used; the message names the key."""


@dataclass(frozen=True)
class Retry:
    """How failed deliveries are retried.

    Attributes:
        attempts: tries per channel and alert within one run (the first one included).
        backoff_s: wait before the second try; doubles with every further try.
        max_backoff_s: the longest wait; a delivery still failing at the end of a run is retried by
            a later run (or ``ctrlens alerts notify``) once ``backoff_s * 2**attempt`` (capped at
            this) has passed since its last try.
    """

    attempts: int = 3
    backoff_s: float = 2.0
    max_backoff_s: float = 900.0

    def wait(self, attempt: int) -> float:
        """Seconds to wait after failed try number ``attempt`` (1-based)."""
        return float(min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s))


@dataclass(frozen=True)
class Smtp:
    """An SMTP server: ``security`` ``starttls`` (port 587), ``tls`` (implicit TLS, port 465) or
    ``none`` (a relay on localhost); login when a user name is given. The server's certificate is
    verified against the system's CAs, or ``ca_file`` (a PEM bundle: an internal CA)."""

    host: str
    port: int = 587
    security: str = "starttls"
    username: str | None = None
    username_env: str | None = None
    password_env: str | None = None
    timeout_s: float = 30.0
    ca_file: Path | None = None


@dataclass(frozen=True)
class Channel:
    """One place alerts go (see the module docstring for the YAML form).

    Attributes:
        name: how the delivery log names it (keep it stable: renaming a channel sends again).
        type: ``webhook``, ``email`` or ``command``.
        min_severity: the least severe alert sent (``warning``: critical and warning).
        models: the models covered (None: all).
        format: webhook / command payload: ``slack`` or ``json``.
        url / url_env: the webhook URL, or the environment variable holding it (a secret).
        headers_env: extra HTTP headers: header name -> environment variable with its value.
        command: the program and its arguments (no shell), fed the payload on stdin.
        smtp, sender, to, subject_prefix, attach_reports: the e-mail digest.
        timeout_s: one try's time limit (HTTP request / program run).
    """

    name: str
    type: str
    min_severity: str = "warning"
    models: tuple[str, ...] | None = None
    format: str = "slack"
    url: str | None = None
    url_env: str | None = None
    headers_env: tuple[tuple[str, str], ...] = ()
    command: tuple[str, ...] | None = None
    smtp: Smtp | None = None
    sender: str | None = None
    to: tuple[str, ...] = ()
    subject_prefix: str = "[ctrlens]"
    attach_reports: bool = True
    timeout_s: float = 10.0

    def covers(self, model: str, severity: str) -> bool:
        """Whether an alert of ``model`` at ``severity`` goes to this channel."""
        if self.models is not None and model not in self.models:
            return False
        return SEVERITY_LEVEL.get(severity, 0) >= SEVERITY_LEVEL[self.min_severity]

    @property
    def target(self) -> str:
        """Where it sends, for messages -- never a secret (an environment variable is named, not read)."""
        if self.type == "webhook":
            return self.url if self.url else f"${self.url_env}"
        if self.type == "email":
            assert self.smtp is not None
            return f"{', '.join(self.to)} via {self.smtp.host}:{self.smtp.port}"
        return " ".join(self.command or ())


@dataclass(frozen=True)
class NotifyConfig:
    """Channels, the dashboard's base URL, the retry policy and the metrics textfile.

    ``max_age_days``: alerts last seen more than this many days before today (the clock's UTC
    date) are not sent -- a backfill of last month then fills the store without paging anyone.
    None: no limit."""

    channels: tuple[Channel, ...] = ()
    base_url: str | None = None
    retry: Retry = field(default_factory=Retry)
    metrics_textfile: Path | None = None
    max_age_days: int | None = None

    def channel(self, name: str) -> Channel:
        for c in self.channels:
            if c.name == name:
                return c
        raise NotifyConfigError(f"no notify channel named {name!r}; channels: {[c.name for c in self.channels]}")


# ------------------------------------------------------------------------------------- parsing


class _R:
    """One mapping of the YAML: typed getters that name the key in errors, unknown keys refused."""

    def __init__(self, d: Any, where: str, source: str):
        if not isinstance(d, Mapping):
            raise NotifyConfigError(f"{source}: {where}: expected a mapping (key: value), got {d!r}")
        self.d, self.where, self.source, self.used = d, where, source, set()

    def err(self, k: str, msg: str) -> NotifyConfigError:
        return NotifyConfigError(f"{self.source}: {self.where}.{k}: {msg}")

    def get(self, k: str, default: Any = None) -> Any:
        self.used.add(k)
        v = self.d.get(k, default)
        return default if v is None else v

    def string(self, k: str, default: str | None = None, *, required: bool = False) -> str | None:
        v = self.get(k, default)
        if v is None:
            if required:
                raise NotifyConfigError(f"{self.source}: {self.where}.{k} is required")
            return None
        if not isinstance(v, str) or not v.strip():
            raise self.err(k, f"expected a non-empty string, got {v!r}")
        return v.strip()

    def choice(self, k: str, default: str, choices: tuple[str, ...]) -> str:
        v = self.string(k, default)
        if v not in choices:
            raise self.err(k, f"expected one of {list(choices)}, got {v!r}")
        return v

    def env(self, k: str) -> str | None:
        v = self.string(k)
        if v is not None and not _ENV.match(v):
            raise self.err(k, f"expected the NAME of an environment variable (letters, digits, _), got {v!r}")
        return v

    def number(self, k: str, default: float, *, lo: float, integer: bool = False) -> Any:
        v = self.get(k, default)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (not integer or float(v) == int(v))
        if not ok:
            raise self.err(k, f"expected {'an integer' if integer else 'a number'}, got {v!r}")
        if v < lo:
            raise self.err(k, f"must be >= {lo}, got {v!r}")
        return int(v) if integer else float(v)

    def strings(self, k: str) -> tuple[str, ...] | None:
        v = self.get(k)
        if v is None:
            return None
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not v or not all(isinstance(x, str) and x.strip() for x in v):
            raise self.err(k, f"expected a list of strings, got {v!r}")
        return tuple(x.strip() for x in v)

    def done(self) -> None:
        unknown = sorted(set(map(str, self.d)) - self.used)
        if unknown:
            raise NotifyConfigError(f"{self.source}: {self.where}: unknown key(s) {unknown}; known keys: {sorted(self.used)}")


def parse_notify(notify: Any, metrics: Any = None, *, source: str = "config", base: Path | None = None,
                 models: Sequence[str] | None = None) -> NotifyConfig:  # fmt: skip
    """A :class:`NotifyConfig` from the parsed ``notify:`` and ``metrics:`` values (None: absent).

    Relative paths are relative to ``base`` (the configuration's folder); a channel's ``models``
    must be among ``models`` (the watched models) when given: a typo would silently cover nothing."""
    base = base or Path.cwd()
    textfile = None
    if metrics is not None:
        m = _R(metrics, "metrics", source)
        tf = m.string("textfile")
        textfile = (Path(tf).expanduser() if Path(tf).expanduser().is_absolute() else base / tf) if tf else None
        m.done()
    if notify is None:
        return NotifyConfig(metrics_textfile=textfile)
    r = _R(notify, "notify", source)
    base_url = r.string("base_url")
    if base_url is not None and not re.match(r"^https?://[^/\s]+", base_url):
        raise r.err("base_url", f"expected the dashboard's address, http(s)://host[:port][/prefix], got {base_url!r}")
    max_age = r.get("max_age_days")
    if max_age is not None:
        max_age = r.number("max_age_days", 0, lo=0, integer=True)
    rr = _R(r.get("retry", {}), "notify.retry", source)
    retry = Retry(attempts=rr.number("attempts", 3, lo=1, integer=True), backoff_s=rr.number("backoff_s", 2.0, lo=0),
                  max_backoff_s=rr.number("max_backoff_s", 900.0, lo=0))  # fmt: skip
    rr.done()
    raw = r.get("channels", [])
    if not isinstance(raw, list):
        raise r.err("channels", f"expected a list of channels, got {raw!r}")
    channels = tuple(_channel(c, f"notify.channels[{i}]", source, base) for i, c in enumerate(raw))
    for i, c in enumerate(channels):
        unknown = sorted(set(c.models or ()) - set(models)) if models is not None else []
        if unknown:
            raise NotifyConfigError(f"{source}: notify.channels[{i}].models: unknown model(s) {unknown}; watched models: {list(models or [])}")
    names = [c.name for c in channels]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise r.err("channels", f"duplicate channel name(s) {dup}; the delivery log tells channels apart by name")
    r.done()
    return NotifyConfig(channels, base_url.rstrip("/") if base_url else None, retry, textfile, max_age)


def _channel(d: Any, where: str, source: str, base: Path) -> Channel:
    r = _R(d, where, source)
    name = r.string("name", required=True)
    assert name is not None
    if not _NAME.match(name):
        raise r.err("name", f"letters, digits and _.:@/- only (at most 200), got {name!r}")
    kind = r.string("type", required=True)
    if kind not in CHANNEL_TYPES:
        raise r.err("type", f"expected one of {list(CHANNEL_TYPES)}, got {kind!r}")
    kw: dict[str, Any] = dict(
        name=name, type=kind, min_severity=r.choice("min_severity", "warning", tuple(SEVERITY_LEVEL)),
        models=r.strings("models"), timeout_s=r.number("timeout_s", 30.0 if kind == "email" else 10.0, lo=0.001),
    )  # fmt: skip
    if kind in ("webhook", "command"):
        kw["format"] = r.choice("format", "slack" if kind == "webhook" else "json", FORMATS)
    if kind == "webhook":
        url, url_env = r.string("url"), r.env("url_env")
        if (url is None) == (url_env is None):
            raise NotifyConfigError(f"{source}: {where}: give exactly one of url or url_env (the environment variable holding a secret URL)")
        if url is not None and not re.match(r"^https?://", url):
            raise r.err("url", f"expected an http(s):// URL, got {url!r}")
        hd = r.get("headers_env", {})
        if not isinstance(hd, Mapping) or not all(isinstance(v, str) and _ENV.match(v) for v in hd.values()):
            raise r.err("headers_env", f"expected a mapping header name -> environment variable name, got {hd!r}")
        kw.update(url=url, url_env=url_env, headers_env=tuple(sorted((str(k), str(v)) for k, v in hd.items())))
    elif kind == "command":
        cmd = r.strings("command")
        if cmd is None:
            raise NotifyConfigError(f"{source}: {where}.command is required: the program and its arguments, as a list")
        kw["command"] = cmd
    else:
        s = _R(r.get("smtp"), f"{where}.smtp", source) if r.get("smtp") is not None else None
        if s is None:
            raise NotifyConfigError(f"{source}: {where}.smtp is required: {{host: ..., port: 587, security: starttls}}")
        security = s.choice("security", "starttls", SECURITY)
        smtp = Smtp(host=s.string("host", required=True), port=s.number("port", 465 if security == "tls" else 587, lo=1, integer=True),  # type: ignore[arg-type]
                    security=security, username=s.string("username"), username_env=s.env("username_env"),
                    password_env=s.env("password_env"), timeout_s=s.number("timeout_s", 30.0, lo=0.001))  # fmt: skip
        ca = s.string("ca_file")
        if ca is not None:
            p = Path(ca).expanduser()
            p = p if p.is_absolute() else base / p
            if not p.is_file():
                raise s.err("ca_file", f"{p} is not a file (expected a PEM bundle of CA certificates)")
            if security == "none":
                raise s.err("ca_file", "only used with security: starttls or tls")
            smtp = replace(smtp, ca_file=p)
        s.done()
        if smtp.username and smtp.username_env:
            raise s.err("username", "give username or username_env, not both")
        if smtp.password_env and not (smtp.username or smtp.username_env):
            raise s.err("password_env", "a password needs a username (or username_env) to log in with")
        sender = r.string("from", required=True)
        to = r.strings("to")
        if not to:
            raise NotifyConfigError(f"{source}: {where}.to is required: a list of e-mail addresses")
        for a in (sender, *to):
            if "@" not in str(a):
                raise NotifyConfigError(f"{source}: {where}: {a!r} is not an e-mail address")
        kw.update(smtp=smtp, sender=sender, to=to, subject_prefix=r.string("subject_prefix", "[ctrlens]"),
                  attach_reports=_bool(r, "attach_reports", True))  # fmt: skip
    r.done()
    return Channel(**kw)


def _bool(r: _R, k: str, default: bool) -> bool:
    v = r.get(k, default)
    if not isinstance(v, bool):
        raise r.err(k, f"expected true or false, got {v!r}")
    return v


__all__ = ["CHANNEL_TYPES", "Channel", "NotifyConfig", "NotifyConfigError", "Retry", "SEVERITY_LEVEL", "Smtp", "parse_notify"]
