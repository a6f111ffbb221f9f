"""Tickets for `/api/live` without a server: one use each, 30 s, a bounded book; the routes
refuse a ticket that is unknown, used or expired, and give tickets only for a header token."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.errors import install_error_handlers
from api.routes import live
from api.routes.live import TICKET_TTL_S, LiveTickets
from mainstream.core.errors import AuthError
from mainstream.node.services import Principal

VIEWER = Principal(name="wall screen", role="viewer")
GOOD = {"Authorization": "Bearer mst_good"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def verify(authorization: str | None) -> Principal:
    if authorization != GOOD["Authorization"]:
        raise AuthError("unknown or revoked token")
    return VIEWER


def test_a_ticket_is_good_once_and_only_for_its_time() -> None:
    clock = Clock()
    tickets = LiveTickets(clock=clock)
    first, second = tickets.issue(VIEWER), tickets.issue(VIEWER)
    assert first != second and len(first) >= 40
    assert tickets.redeem(first) == VIEWER
    with pytest.raises(AuthError):
        tickets.redeem(first)  # used up
    clock.now += TICKET_TTL_S + 0.1
    with pytest.raises(AuthError):
        tickets.redeem(second)  # expired
    with pytest.raises(AuthError):
        tickets.redeem("made-up")


def test_the_ticket_book_stays_bounded() -> None:
    clock = Clock()
    tickets = LiveTickets(max_tickets=3, clock=clock)
    issued = [tickets.issue(VIEWER) for _ in range(5)]
    with pytest.raises(AuthError):
        tickets.redeem(issued[0])  # the oldest were forgotten
    assert [tickets.redeem(ticket) for ticket in issued[2:]] == [VIEWER] * 3
    tickets.issue(VIEWER)
    clock.now += TICKET_TTL_S + 1
    tickets.issue(VIEWER)  # drops the expired one on the way
    assert len(tickets._tickets) == 1


@pytest.fixture
def app() -> FastAPI:
    application = FastAPI()
    application.include_router(live.router)
    install_error_handlers(application)
    application.state.services = SimpleNamespace(tokens=SimpleNamespace(verify=verify))
    return application


def test_tickets_come_only_for_a_header_token(app: FastAPI) -> None:
    client = TestClient(app)
    answer = client.post("/api/live/ticket", headers=GOOD)
    assert answer.status_code == 200, answer.text
    assert answer.json()["expires_in_s"] == TICKET_TTL_S
    assert answer.headers["cache-control"] == "no-store"
    assert client.post("/api/live/ticket").status_code == 401
    assert client.post("/api/live/ticket", params={"token": "mst_good"}).status_code == 401
    assert client.post("/api/live/ticket", headers={"Authorization": "Bearer x"}).status_code == 401


def test_the_stream_refuses_expired_and_unknown_tickets(app: FastAPI) -> None:
    clock = Clock()
    app.state.live_tickets = LiveTickets(clock=clock)
    client = TestClient(app)
    ticket = client.post("/api/live/ticket", headers=GOOD).json()["ticket"]
    clock.now += TICKET_TTL_S + 0.1
    expired = client.get("/api/live", params={"ticket": ticket})
    assert expired.status_code == 401 and "ticket" in expired.json()["detail"]
    assert client.get("/api/live", params={"ticket": "made-up"}).status_code == 401
    assert client.get("/api/live", params={"ticket": ""}).status_code == 401
