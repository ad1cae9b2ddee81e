"""A request-body limit inside Ray Serve's HTTP proxy, so an oversized body is refused before the
proxy queues it (the router's own limit only bounds what the router reads).

Serve applies it when its proxy starts with
``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=snappy_pipelines.proxy:middlewares`` in its
environment (``snappy serve`` sets it for the Ray it starts; a cluster sets it on its nodes, see
``infra/k8s/rayservice.yaml``). ``SNAPPY_MAX_BODY_BYTES`` (default 64 KiB) is the limit.
Only the standard library and Starlette (Serve's own dependency) are imported.
"""
from __future__ import annotations

import json
import os

CALLBACK_VAR = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
CALLBACK = "snappy_pipelines.proxy:middlewares"
LIMIT_VAR = "SNAPPY_MAX_BODY_BYTES"
DEFAULT_LIMIT = 64 << 10


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413, whatever its framing; a body
    within it is read here (at most ``limit`` bytes held) and replayed to the app unchanged."""

    def __init__(self, app, limit: int = DEFAULT_LIMIT):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        size = headers.get(b"content-length")
        if size is not None and size.isdigit() and int(size) > self.limit:
            return await self._refuse(send, f"the request body is {int(size)} bytes, over the limit of {self.limit}")
        messages, total = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":  # the client went away
                break
            total += len(message.get("body", b""))
            if total > self.limit:
                return await self._refuse(send, f"the request body is over the limit of {self.limit} bytes")
            if not message.get("more_body"):
                break
        replay = iter(messages)

        async def receive_again():
            try:
                return next(replay)
            except StopIteration:
                return await receive()
        return await self.app(scope, receive_again, send)

    @staticmethod
    async def _refuse(send, error: str) -> None:
        body = json.dumps({"error": error, "field": "body"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def middlewares() -> list:
    """What Serve's proxy calls (``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``)."""
    from starlette.middleware import Middleware

    return [Middleware(BodyLimit, limit=int(os.environ.get(LIMIT_VAR, DEFAULT_LIMIT)))]
