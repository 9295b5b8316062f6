"""A real HTTP receiver on 127.0.0.1 for webhook tests: records requests, answers as scripted."""

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import uvicorn
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.requests import Request
from starlette.responses import Response


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Answer:
    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    # When given, the request is answered only once it is set.
    hold: asyncio.Event | None = None


@dataclass
class Receiver:
    port: int
    received: list[Received] = field(default_factory=list)
    # Answers are used in order; once only one is left, it is repeated.
    script: list[Answer] = field(default_factory=lambda: [Answer()])
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    # The endpoint's secrets: every request is checked with the reference `standardwebhooks` library.
    secrets: list[str] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)
    # Requests being answered now, and the most there ever were at once.
    in_flight: int = 0
    most_in_flight: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def app(self, scope: dict[str, object], receive: object, send: object) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)  # type: ignore[arg-type]
        received = Received(dict(request.headers), await request.body())
        for secret in self.secrets:
            try:
                Webhook(secret).verify(received.body, received.headers)
            except WebhookVerificationError as exc:
                self.unverified.append(f"{secret[:12]}…: {exc}")
        self.received.append(received)
        self.arrived.set()
        answer = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if answer.hold is not None:
                await answer.hold.wait()
            if answer.delay:
                await asyncio.sleep(answer.delay)
        finally:
            self.in_flight -= 1
        await Response(answer.body, status_code=answer.status, headers=answer.headers)(scope, receive, send)  # type: ignore[arg-type]

    async def wait_for(self, count: int, limit: float = 10.0) -> None:
        """Until `count` requests arrived, or fail after `limit` seconds."""
        async with asyncio.timeout(limit):
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def running_receiver(receiver: Receiver | None = None) -> AsyncIterator[Receiver]:
    """A receiver on a free port; or `receiver` up again on its port (down while no server runs)."""
    receiver = receiver or Receiver(port=free_port())
    config = uvicorn.Config(
        receiver.app, host="127.0.0.1", port=receiver.port, log_config=None, access_log=False, interface="asgi3"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
        await asyncio.sleep(0.01)
    try:
        yield receiver
    finally:
        server.should_exit = True
        await task
