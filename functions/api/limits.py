"""Request bodies bounded before they are parsed: 413 in the API's error schema above `max_bytes`.

A pure ASGI middleware inside the observability one (so the answer carries the request id). A declared
Content-Length over the limit is answered at once, without reading the body; a body without one (chunked) is
counted as it arrives and the read that crosses the limit raises a 413 HTTPException, which FastAPI passes on
to the app's handler for it. (FastAPI's own `max_body_size` answers in plain text, outside the error schema.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.exceptions import HTTPException

TOO_LARGE = 413


class BodyLimitMiddleware:
    def __init__(self, app: Any, *, max_bytes: int, error_body: Callable[[str, str], bytes]) -> None:
        """`error_body(code, detail)`: the app's error schema, encoded."""
        self.app = app
        self.max_bytes = max_bytes
        self.error_body = error_body

    def _detail(self) -> str:
        return f"the request body is larger than {self.max_bytes:,} bytes"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((value for name, value in scope.get("headers", ()) if name == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            body = self.error_body("payload_too_large", self._detail())
            await send(
                {
                    "type": "http.response.start",
                    "status": TOO_LARGE,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        received = 0

        async def counted() -> dict[str, Any]:
            nonlocal received
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(TOO_LARGE, self._detail())
            return message

        await self.app(scope, counted, send)
