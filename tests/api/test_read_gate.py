"""The read gate: at most N GETs in the application at once; streams and health pass."""

from __future__ import annotations

import asyncio
from typing import Any

from api.read_gate import ReadGate


class CountingApp:
    """Holds each request until released, counting how many are inside at once."""

    def __init__(self) -> None:
        self.inside = 0
        self.most_inside = 0
        self.release = asyncio.Event()
        self.paths: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        self.paths.append(scope["path"])
        try:
            if not scope["path"].startswith(("/api/live", "/api/health/", "/api/packages/")):
                await self.release.wait()
        finally:
            self.inside -= 1


def http(method: str, path: str) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "headers": []}


async def _nothing() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _ignore(message: dict[str, Any]) -> None:
    return None


def test_at_most_n_reads_at_once_and_streams_and_health_are_not_queued() -> None:
    async def scenario() -> CountingApp:
        app = CountingApp()
        gate = ReadGate(app, max_concurrent=2)
        reads = [
            asyncio.create_task(gate(http("GET", "/api/events"), _nothing, _ignore))
            for _ in range(10)
        ]
        await asyncio.sleep(0.05)
        assert app.inside == 2  # eight wait their turn
        # While both places are taken, a live stream, a health check and a change get in.
        await asyncio.wait_for(gate(http("GET", "/api/live"), _nothing, _ignore), 1)
        await asyncio.wait_for(gate(http("GET", "/api/health/ready"), _nothing, _ignore), 1)
        download = http("GET", "/api/packages/trains/1/archive")
        await asyncio.wait_for(gate(download, _nothing, _ignore), 1)
        change = asyncio.create_task(gate(http("POST", "/api/apps"), _nothing, _ignore))
        await asyncio.sleep(0.05)
        assert app.inside == 3 and "/api/apps" in app.paths
        dry_run = asyncio.create_task(
            gate(http("POST", "/api/schedule/dry-run"), _nothing, _ignore)
        )
        await asyncio.sleep(0.05)
        assert "/api/schedule/dry-run" not in app.paths  # a dry run reads: it waits its turn
        app.release.set()
        await asyncio.wait_for(asyncio.gather(*reads, change, dry_run), 5)
        return app

    app = asyncio.run(scenario())
    assert app.paths.count("/api/events") == 10  # every read was served in the end
    assert "/api/schedule/dry-run" in app.paths
    assert app.most_inside == 3  # two reads and the change
