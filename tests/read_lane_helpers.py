"""Sending a request with the read lane and without it, and counting what the lane did."""

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import httpx
from fastapi import FastAPI

from app.core.metrics import REGISTRY

OUTCOMES = ("answered", "unavailable", "passed")
# The only headers a lane answer and a route answer to the same request may differ in: the
# request id is made per request (app/http/middleware.py). No other header carries time or identity.
DIFFERING_HEADERS = frozenset({"x-request-id"})

Headers = Mapping[str, str] | Sequence[tuple[str, str]]


def lane_count(outcome: str) -> float:
    return REGISTRY.get_sample_value("guanxi_read_lane_requests_total", {"outcome": outcome}) or 0.0


@contextmanager
def counting() -> Iterator[dict[str, float]]:
    """What the lane answered and passed inside the block."""
    before = {outcome: lane_count(outcome) for outcome in OUTCOMES}
    counts: dict[str, float] = {}
    yield counts
    counts.update({outcome: lane_count(outcome) - value for outcome, value in before.items()})


@contextmanager
def lane_off(app: FastAPI) -> Iterator[None]:
    """The lane's own switch: without connections it leaves every request to the routes, as in an
    app started with GUANXI_READ_LANE_POOL_SIZE=0."""
    saved = app.state.read_connections
    app.state.read_connections = None
    try:
        yield
    finally:
        app.state.read_connections = saved


def comparable(response: httpx.Response) -> tuple[int, dict[str, str], bytes]:
    headers = {name: value for name, value in response.headers.items() if name not in DIFFERING_HEADERS}
    return response.status_code, headers, response.content


async def both_ways(
    app: FastAPI, client: httpx.AsyncClient, path: str, headers: Headers
) -> tuple[httpx.Response, httpx.Response, dict[str, float]]:
    """The same request with the lane and without it, and what the lane did with the first."""
    with counting() as counts:
        with_lane = await client.get(path, headers=headers)
    with lane_off(app):
        without = await client.get(path, headers=headers)
    return with_lane, without, counts
