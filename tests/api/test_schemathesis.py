"""Property-based run over the whole REST API: requests generated from the OpenAPI schema,
valid and invalid, sent with an admin token to a real (started) node in process.

Whatever a client sends, the node must answer 2xx or 4xx, never 5xx: bad input is the
client's error and says so. Hypothesis keeps the number of examples per operation small so
that the whole run takes seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from api.app import create_app
from mainstream.node.node import Node
from mainstream.node.settings import Settings
from tests.support.nodes import node_config

pytestmark = pytest.mark.slow

ADMIN_SECRET = "mst_schemathesis-admin-secret"  # from settings: no request can revoke it
ADMIN = {"Authorization": f"Bearer {ADMIN_SECRET}"}
# Streams never end, so a single request would hang the run; the dashboard's files are static.
# A fleet plan's body nests whole scheduling problems: generating it took 40 s of the run
# (tests/api/test_api.py and tests/mainstream/cli/test_cli_fleet.py send it good and bad ones).
EXCLUDED_PATHS = r"^/api/live|^/ui|^/$|^/api/fleet/plan$"
EXAMPLES_PER_OPERATION = 8


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    data = tmp_path_factory.mktemp("schemathesis-node")
    node = Node(
        Settings(
            **node_config(
                data,
                admin_token=ADMIN_SECRET,
                api={"max_upload_bytes": 1024 * 1024},
            )
        )
    )
    app = create_app(node, manage_node=False)
    node.start()
    try:
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        yield schema
    finally:
        node.stop()


@pytest.fixture(scope="module")
def client(api_schema: Any) -> Any:
    from fastapi.testclient import TestClient

    return TestClient(api_schema.app, raise_server_exceptions=False)


schema = schemathesis.pytest.from_fixture("api_schema").exclude(path_regex=EXCLUDED_PATHS)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors(case: Any) -> None:
    case.call_and_validate(headers=ADMIN, checks=[not_a_server_error])


def test_the_schema_covers_every_resource(api_schema: Any) -> None:
    """The run above tests what the schema lists; make sure it lists the API."""
    paths = {operation.ok().path for operation in api_schema.get_all_operations()}
    for path in ("/api/packages", "/api/apps", "/api/cameras", "/api/schedule/dry-run"):
        assert path in paths
    assert "/api/events" in paths and "/api/tokens/{token_id}" in paths


HUGE = 10**20  # beyond SQLite's INTEGER: once answered 500 (OverflowError, MemoryError)


@pytest.mark.parametrize(
    ("method", "url", "body", "status"),
    [
        ("GET", f"/api/events?offset={HUGE}", None, 422),
        ("GET", f"/api/schedule/history?offset={HUGE}", None, 422),
        ("DELETE", f"/api/tokens/{HUGE}", None, 404),
        ("DELETE", f"/api/tokens/-{HUGE}", None, 404),
        ("GET", f"/api/packages/trains/{HUGE}", None, 422),
        ("GET", "/api/packages/trains/\u00b2", None, 422),  # '²'.isdigit() but not int('²')
        ("DELETE", f"/api/packages/trains/{HUGE}", None, 422),
        ("POST", "/api/apps", {"name": "a", "version": HUGE}, 422),
        ("POST", "/api/apps", {"name": "a", "x_vote": HUGE}, 422),
        ("POST", "/api/apps", {"name": "a", "weight": 1e308}, 422),
        ("PATCH", "/api/apps/a", {"event_overrides": {"event_length_s": 1e300}}, 422),
        ("POST", "/api/schedule/dry-run", {"add_apps": [{"name": "a", "x_vote": HUGE}]}, 422),
    ],
)
def test_numbers_out_of_range_are_client_errors(
    client: Any, method: str, url: str, body: Any, status: int
) -> None:
    answer = client.request(method, url, json=body, headers=ADMIN)
    assert answer.status_code == status, answer.text
    assert answer.json()["detail"]
