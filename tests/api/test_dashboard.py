"""The dashboard's static files and routes, without a browser (the browser test is
test_dashboard_browser.py): every file the page loads exists, nothing is fetched from the
internet, `/` redirects to `/ui/`, and `/api/whoami` names the caller's role."""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.deps import viewer
from api.routes import dashboard
from mainstream.node.services import Principal

SVG_NAMESPACE = "http://www.w3.org/2000/svg"


def static_files() -> dict[str, str]:
    return {path.name: path.read_text() for path in dashboard.DASHBOARD_DIR.iterdir()}


def test_every_file_the_page_loads_is_there() -> None:
    files = static_files()
    html = files["index.html"]
    referenced = set(re.findall(r'(?:src|href)="([^"#:]+)"', html))
    assert {"app.js", "style.css"} <= referenced
    for source in files.values():
        referenced |= set(re.findall(r'from "\./([^"]+)"', source))
    missing = sorted(name for name in referenced if name not in files)
    assert missing == [], f"referenced but not shipped: {missing}"


def test_nothing_is_fetched_from_the_internet() -> None:
    for name, source in static_files().items():
        for url in re.findall(r"(?:https?:)?//[A-Za-z0-9.-]+\.[a-z]{2,}[^\s\"')]*", source):
            assert url == SVG_NAMESPACE, f"{name} loads {url}"
        assert "@import" not in source, name


@pytest.fixture
def client() -> TestClient:
    app = FastAPI()
    app.include_router(dashboard.router)
    app.dependency_overrides[viewer] = lambda: Principal(name="ops", role="admin")
    return TestClient(app)


def test_root_redirects_to_the_dashboard(client: TestClient) -> None:
    answer = client.get("/", follow_redirects=False)
    assert answer.status_code in (302, 307)
    assert answer.headers["location"] == "ui/"
    page = client.get("/")
    assert page.status_code == 200 and str(page.url).endswith("/ui/")
    assert '<script type="module" src="app.js">' in page.text


def test_static_files_are_served_with_their_types(client: TestClient) -> None:
    script = client.get("/ui/app.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert client.get("/ui/style.css").headers["content-type"].startswith("text/css")
    assert client.get("/ui/no-such-file.js").status_code == 404
    assert client.get("/ui/../routes/dashboard.py").status_code == 404


def test_whoami_names_the_role(client: TestClient) -> None:
    assert client.get("/api/whoami").json() == {"name": "ops", "role": "admin"}
