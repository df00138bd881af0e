"""Access control: safe by default.

* **Local** (no token, no basic auth): only loopback binds are allowed (:func:`check_bind`), and
  requests must name a loopback ``Host`` -- a web page elsewhere cannot reach the dashboard
  through DNS rebinding. Alert changes are recorded as by ``local``.
* **Token** (``--token T``): every request needs it -- ``Authorization: Bearer T``, or the cookie
  set when a browser first opens ``http://host:port/?token=T`` (then redirected to the same URL
  without the token, so it does not linger in the address bar, history or shared links). The
  cookie is HttpOnly and SameSite=Strict. Alert changes are recorded as by ``token``.
* **Basic auth** (``--basic-auth user:password``): HTTP basic authentication; alert changes are
  recorded with the user name.

Secrets are compared in constant time. Dash's callbacks are JSON POSTs, which a cross-site form
cannot send, and the token cookie is SameSite=Strict: other sites cannot drive the alert buttons.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit

from ctrlens.errors import InputError

COOKIE = "ctrlens_dashboard"
LOCAL_USER = "local"
TOKEN_USER = "token"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")


def is_loopback(host: str) -> bool:
    h = host.strip().strip("[]")
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def check_bind(host: str, *, token: str | None, basic_auth: str | None) -> None:
    """Refuse to serve on a non-loopback interface without a token or basic auth (InputError)."""
    if token and basic_auth:
        raise InputError("--token and --basic-auth: use one of them, not both")
    if basic_auth is not None:
        parse_basic_auth(basic_auth)
    if token is not None and len(token) < 8:
        raise InputError("--token: use at least 8 characters (e.g. `python -c 'import secrets; print(secrets.token_urlsafe())'`)")
    if not is_loopback(host) and not (token or basic_auth):
        raise InputError(
            f"refusing to serve the dashboard on {host}: anyone who can reach that interface could read every model's "
            "results and change alert states. Add --token T (or --basic-auth user:password), or keep the default "
            "--host 127.0.0.1 and use an SSH tunnel"
        )


def parse_basic_auth(spec: str) -> tuple[str, str]:
    user, sep, password = spec.partition(":")
    if not sep or not user or not password:
        raise InputError("--basic-auth: expected user:password (both non-empty)")
    return user, password


@dataclass(frozen=True)
class Auth:
    """The access rule of one dashboard (see the module docstring)."""

    token: str | None = None
    basic_auth: str | None = None

    @property
    def mode(self) -> str:
        return "token" if self.token else "basic" if self.basic_auth else "local"

    def install(self, server) -> None:  # noqa: ANN001 - a flask.Flask
        """Check every request of ``server`` (a Flask app) before Dash sees it."""
        import flask

        cookie_value = _cookie_value(self.token) if self.token else None

        @server.before_request
        def _check():  # noqa: ANN202
            req = flask.request
            flask.g.ctrlens_user = LOCAL_USER
            if self.mode == "local":
                if not is_loopback(urlsplit("//" + (req.host or "")).hostname or ""):
                    return flask.Response("This dashboard only answers on localhost (start it with --token to share it).\n", 403,
                                          mimetype="text/plain")  # fmt: skip
                return None
            if self.mode == "basic":
                user, password = parse_basic_auth(self.basic_auth or "")
                given = req.authorization
                if (given is not None and given.type == "basic" and _same(given.username or "", user)
                        and _same(given.password or "", password)):  # fmt: skip
                    flask.g.ctrlens_user = user
                    return None
                return flask.Response("Authentication required.\n", 401, {"WWW-Authenticate": 'Basic realm="ctrlens dashboard", charset="UTF-8"'},
                                      mimetype="text/plain")  # fmt: skip
            # token
            flask.g.ctrlens_user = TOKEN_USER
            header = req.headers.get("Authorization", "")
            if header.startswith("Bearer ") and _same(header[7:].strip(), self.token or ""):
                return None
            if cookie_value and _same(req.cookies.get(COOKIE, ""), cookie_value):
                return None
            given_token = req.args.get("token")
            if given_token is not None and _same(given_token, self.token or "") and req.method == "GET":
                rest = [(k, v) for k, v in parse_qsl(req.query_string.decode("utf-8", "replace")) if k != "token"]
                resp = flask.redirect(req.path + (("?" + urlencode(rest)) if rest else ""), code=303)
                resp.set_cookie(COOKIE, cookie_value, httponly=True, samesite="Strict", secure=req.is_secure)
                return resp
            return flask.Response("A valid access token is required: open the link with ?token=... that the dashboard "
                                  "printed, or send 'Authorization: Bearer <token>'.\n", 401, mimetype="text/plain")  # fmt: skip


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def _cookie_value(token: str) -> str:
    # the cookie holds a digest of the token, not the token itself
    return base64.urlsafe_b64encode(hashlib.sha256(b"ctrlens-dashboard:" + token.encode("utf-8")).digest()).decode().rstrip("=")


def current_user() -> str:
    """Who is making the current request (``local``, ``token`` or the basic-auth user)."""
    try:
        import flask

        return str(flask.g.get("ctrlens_user", LOCAL_USER))
    except RuntimeError:  # outside a request (direct calls in tests / benchmarks)
        return LOCAL_USER


__all__ = ["Auth", "COOKIE", "check_bind", "current_user", "is_loopback", "parse_basic_auth"]
