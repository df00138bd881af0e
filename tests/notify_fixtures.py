"""Real local servers for the notification tests, on 127.0.0.1 and free ports, started by the tests.

* :class:`Hook` -- an HTTP server that records every POST (path, headers, parsed JSON body) and
  answers with the statuses of its ``plan`` first (``[500, 500]``: fails twice), then 200;
* :class:`Mailbox` -- an SMTP server (aiosmtpd) that keeps the messages it receives; with
  ``login=(user, password)`` it requires AUTH (over plain TCP: loopback only).
"""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Hook:
    def __init__(self, plan: list[int] | None = None):
        self.plan = list(plan or [])
        self.posts: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with hook.lock:
                    status = hook.plan.pop(0) if hook.plan else 200
                    hook.posts.append({"path": self.path, "headers": dict(self.headers), "json": json.loads(body), "status": status})
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def ok_posts(self, path: str | None = None) -> list[dict[str, Any]]:
        return [p for p in self.posts if p["status"] == 200 and (path is None or p["path"] == path)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Mailbox:
    def __init__(self, login: tuple[str, str] | None = None, *, tls: str | None = None, cert: tuple[str, str] | None = None):
        """``tls``: None (plain), ``starttls`` (required before anything else) or ``tls`` (implicit)."""
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        self.messages: list[Any] = []
        self.envelopes: list[Any] = []
        box = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
                box.envelopes.append(envelope)
                box.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
                return "250 Message accepted for delivery"

        def auth(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
            ok = login is not None and data.login.decode() == login[0] and data.password.decode() == login[1]
            return AuthResult(success=ok)

        self.port = free_port()
        kw: dict[str, Any] = dict(auth_require_tls=tls == "starttls", authenticator=auth, auth_required=True) if login else {}
        if tls is not None:  # (implicit TLS: aiosmtpd does not see the socket's TLS, so AUTH is not tied to it above)
            import ssl

            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            assert cert is not None
            ctx.load_cert_chain(*cert)
            kw.update(tls_context=ctx, require_starttls=True) if tls == "starttls" else kw.update(ssl_context=ctx)
        with warnings.catch_warnings():  # AUTH without TLS: fine on loopback, in a test
            warnings.simplefilter("ignore", UserWarning)
            self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, **kw)
            self.controller.start()

    def close(self) -> None:
        self.controller.stop()


@pytest.fixture
def hook():
    h = Hook()
    yield h
    h.close()


def self_signed(folder) -> tuple[str, str]:
    """A certificate for 127.0.0.1 (and its key), made with the openssl command line."""
    import shutil
    import subprocess

    from conftest import require_or_skip

    require_or_skip(shutil.which("openssl") is not None, "the openssl command line is needed to make a test certificate")
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)  # fmt: skip
    return cert, key
