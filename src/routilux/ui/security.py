"""The web UI's guard: an ASGI middleware every request and stream passes through.

* **Token** (when the app has one): ``Authorization: Bearer <token>`` or the cookie
  :data:`COOKIE` is required on every request, stream and static file; a page visited
  as ``/?token=<token>`` sets the cookie (``HttpOnly; SameSite=Strict``) and redirects
  to the same page without the token in its address. Compared with
  :func:`hmac.compare_digest`.
* **Host**: without a token only loopback names (``127.0.0.1``, ``localhost``,
  ``[::1]``) are accepted in the ``Host`` header, so a page of another site that rebinds
  its DNS name to 127.0.0.1 cannot read the API.
* **Same origin**: a request that changes something (any method but GET, HEAD,
  OPTIONS) needs an ``Origin`` header equal to ``http(s)://<Host>``, or, without one,
  ``Sec-Fetch-Site: same-origin``; a request with neither is refused too. This holds
  with or without a token: it stops other sites' pages posting to localhost (CSRF).
  Scripts send ``Origin: http://127.0.0.1:8321`` (the address they call).
* **Headers** on every response: a Content-Security-Policy (``default-src 'self'``:
  no inline script, nothing from other origins; inline styles are allowed because
  Mermaid styles the SVG it draws), ``X-Content-Type-Options: nosniff``,
  ``Referrer-Policy: no-referrer``, ``frame-ancestors 'none'``.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, MutableMapping
from typing import Any, Callable, Optional
from urllib.parse import parse_qsl, urlencode

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The cookie that carries the token for the browser pages.
COOKIE = "routilux_ui_token"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
# Pages that take ?token= (the API takes the header or the cookie).
_PAGE_PREFIXES = ("/jobs/", "/flows")


def host_name(host: str) -> str:
    """The name part of a ``Host`` header (without its port)."""
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Guard:
    """Wraps the app: token, host and same-origin checks, security headers."""

    def __init__(self, app: ASGIApp, token: Optional[str]) -> None:
        self.app = app
        self.token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {
            key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]
        }
        host = headers.get("host", "")
        method = scope["method"]
        refusal = self._refusal(scope, headers, host, method)
        if refusal is not None:
            status, message = refusal
            await _send_json(send, status, {"error": message})
            return
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        given = query.get("token")
        if (
            self.token is not None
            and given is not None
            and _is_page(scope["path"])
            and hmac.compare_digest(given.encode(), self.token)
        ):
            await self._set_cookie(send, scope["path"], query)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + _SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _refusal(
        self, scope: Scope, headers: dict[str, str], host: str, method: str
    ) -> Optional[tuple[int, str]]:
        if self.token is None and host_name(host).lower() not in LOOPBACK_NAMES:
            return 403, f"host {host!r} refused: without a token only loopback names are served"
        if self.token is not None and not self._authorized(scope, headers):
            return 401, "a token is required: 'Authorization: Bearer <token>' (or open /?token=...)"
        if method not in _SAFE_METHODS:
            origin = headers.get("origin")
            if origin is not None:
                scheme = scope.get("scheme", "http")
                if origin != f"{scheme}://{host}":
                    return 403, f"cross-origin request refused (Origin {origin!r}, Host {host!r})"
            elif headers.get("sec-fetch-site") != "same-origin":
                return 403, (
                    "a request that changes something needs an Origin header matching "
                    f"the host (Origin: http://{host})"
                )
        return None

    def _authorized(self, scope: Scope, headers: dict[str, str]) -> bool:
        assert self.token is not None
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer " and hmac.compare_digest(
            auth[7:].strip().encode(), self.token
        ):
            return True
        cookie = _cookie(headers.get("cookie", ""), COOKIE)
        if cookie is not None and hmac.compare_digest(cookie.encode(), self.token):
            return True
        if _is_page(scope["path"]) and scope["method"] == "GET":
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            given = query.get("token")
            if given is not None and hmac.compare_digest(given.encode(), self.token):
                return True
        return False

    async def _set_cookie(self, send: Send, path: str, query: dict[str, str]) -> None:
        """A page visited with the right ``?token=``: set the cookie, drop the token
        from the address."""
        rest = {key: value for key, value in query.items() if key != "token"}
        location = path + ("?" + urlencode(rest) if rest else "")
        assert self.token is not None
        cookie = f"{COOKIE}={self.token.decode()}; HttpOnly; SameSite=Strict; Path=/"
        await send(
            {
                "type": "http.response.start",
                "status": 303,
                "headers": [
                    (b"location", location.encode()),
                    (b"set-cookie", cookie.encode()),
                    *_SECURITY_HEADERS,
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})


def _is_page(path: str) -> bool:
    return path == "/" or path.startswith(_PAGE_PREFIXES)


def _cookie(header: str, name: str) -> Optional[str]:
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value
    return None


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *_SECURITY_HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
