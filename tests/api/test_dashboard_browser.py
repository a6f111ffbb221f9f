"""The web dashboard in a real headless Chromium against a real `mainstream serve` process.

From a first run (the serve output says where the dashboard is and how to make a token),
signs in with tokens, sees the synthetic camera's live view, an event with its snapshot and
its video clip (the <video> loads: ready state and duration), the retention figures, the
plan's DAG and comparison chart, marks the event, plans a what-if with a hypothetical app, and
checks that a viewer token gets no admin controls, and that the page falls back to polling
when the live stream is unavailable. Screenshots (and the first run's serve output,
`00-first-run-serve.txt`) are written to $MAINSTREAM_TEST_ARTIFACTS (default:
`test-artifacts/` in pytest's temp folder; the path is printed).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.nodes import (
    Daemon,
    TinyPackages,
    create_token,
    free_port,
    node_config,
    upload,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Containers usually run as root without user namespaces: Chromium's sandbox cannot start.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]

FRAME_LOADED = """() => {
  const image = document.querySelector('img[data-camera-frame="synthetic"]');
  return image !== null && image.complete && image.naturalWidth > 0 && image.offsetWidth > 0;
}"""
# The event's clip in a <video>: its metadata (duration) loaded, or more.
CLIP_LOADED = """() => {
  const video = document.querySelector('video[data-clip]');
  return video !== null && video.readyState >= 1 && Number.isFinite(video.duration)
    && video.duration > 0 && video.videoWidth > 0;
}"""
# The live view: an MJPEG stream in an <img>, which stays incomplete while it plays.
LIVE_VIEW_PLAYING = """() => {
  const image = document.querySelector('img[data-live-view][data-camera-frame="synthetic"]');
  return image !== null && image.naturalWidth > 0 && image.offsetWidth > 0;
}"""
EVENT_SHOT_LOADED = """() => [...document.querySelectorAll('img[data-event-shot]')]
  .some((image) => image.complete && image.naturalWidth > 0 && image.offsetWidth > 0)"""


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("MAINSTREAM_TEST_ARTIFACTS") or tmp_path / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\ndashboard screenshots: {folder}")
    return folder


@pytest.fixture
def running_node(
    tmp_path: Path, tiny_packages: TinyPackages, artifacts: Path
) -> Iterator[tuple[Daemon, str, str]]:
    """A serving node with the `trains` app deployed on the synthetic camera; yields the
    daemon and an admin and a viewer token. Started on a fresh data directory without tokens
    (a first run); its clips are short (at most 2 s), so that the open event gets one soon."""
    data = tmp_path / "data"
    tiny_packages.register_base(data)
    config = tmp_path / "node.yaml"
    port = free_port()
    settings = node_config(
        data,
        api={"host": "127.0.0.1", "port": port},
        clips={"pre_s": 1.0, "post_s": 1.0, "max_s": 2.0, "fps": 5.0},
        retention={"interval_s": 2.0},  # figures as of the last pass: a pass every 2 s
    )
    config.write_text(yaml.safe_dump(settings))
    daemon = Daemon(config=config, log=tmp_path / "serve.log", port=port)
    daemon.start()
    # The first run says where the dashboard is and how to make the first token.
    first_run = daemon.log.read_text(errors="replace")
    (artifacts / "00-first-run-serve.txt").write_text(first_run)
    assert f"dashboard  {daemon.url}/ui/" in first_run, first_run
    assert (
        f"no API token yet: create one with `mainstream token create --role admin --config {config}`"
        in first_run
    ), first_run
    admin = create_token(config, "admin")
    viewer = create_token(config, "viewer")
    try:
        with httpx.Client(base_url=daemon.url, timeout=180) as client:
            answer = upload(client, admin, tiny_packages.trains.read_bytes())
            assert answer.status_code == 201, answer.text
            created = client.post(
                "/api/apps",
                # threshold 0: every analysed frame fires, so an event opens at once
                json={"name": "trains", "threshold": 0.0, "quiet_time_s": 120},
                headers=admin,
            )
            assert created.status_code == 201, created.text
            assert wait_for(
                lambda: bool(client.get("/api/events", headers=viewer).json()["items"]),
                timeout=60,
            ), daemon.log_tail()
        yield daemon, admin["Authorization"][7:], viewer["Authorization"][7:]
    finally:
        daemon.stop()


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium)")
def test_dashboard_in_a_real_browser(
    running_node: tuple[Daemon, str, str], artifacts: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    daemon, admin_token, viewer_token = running_node
    page_errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.set_default_timeout(20_000)

            # `/` sends the browser to the dashboard, which asks for a token.
            page.goto(daemon.url + "/")
            assert page.url == daemon.url + "/ui/"
            expect(page.get_by_label("API token")).to_be_visible()
            page.get_by_label("API token").fill("mst_not-a-real-token")
            page.get_by_role("button", name="Sign in").click()
            expect(page.locator("#login-error")).to_contain_text("not accepted")
            page.screenshot(path=artifacts / "01-sign-in-refused.png")

            # Admin: camera streaming with a frame, the app, the plan, an event, admin controls.
            page.get_by_label("API token").fill(admin_token)
            page.get_by_role("button", name="Sign in").click()
            expect(page.locator("#role-badge")).to_have_text("admin")
            camera = page.locator('[data-camera="synthetic"]')
            expect(camera.locator(".pill")).to_have_attribute("data-state", "streaming")
            page.wait_for_function(LIVE_VIEW_PLAYING)
            assert "/stream.mjpg?ticket=" in str(
                camera.locator("img[data-live-view]").get_attribute("src")
            )
            planned = httpx.get(
                f"{daemon.url}/api/schedule", headers={"Authorization": f"Bearer {viewer_token}"}
            ).json()["plan"]["apps"][0]
            expect(page.locator('tr[data-app="trains"] .mono')).to_have_text(planned["cut_point"])
            expect(page.locator("#dag svg.dag")).to_be_visible()
            expect(page.locator("#m-plan-sub")).to_contain_text("proven optimal")
            expect(page.locator("#comparison svg.bars")).to_be_visible()
            expect(page.locator("#event-list li.event").first).to_contain_text("trains")
            page.wait_for_function(EVENT_SHOT_LOADED)
            expect(page.get_by_text("Add camera")).to_be_visible()
            expect(page.get_by_role("button", name="Remove app trains")).to_be_visible()
            expect(page.locator("#live-indicator")).to_have_class(re.compile(r"\blive\b"))
            page.screenshot(path=artifacts / "02-dashboard-admin.png", full_page=True)

            # The event's clip (stored once `clips.max_s` is recorded, the event still open):
            # linked from the card, it loads and plays in the page's <video>.
            card = page.locator("#event-list li.event").first
            event_id = card.get_attribute("data-event")
            play = card.get_by_role("button", name=f"Play the clip of event {event_id}")
            expect(play).to_be_visible(timeout=30_000)
            play.click()
            page.wait_for_function(CLIP_LOADED)
            duration = page.evaluate("() => document.querySelector('video[data-clip]').duration")
            assert 1.0 <= duration <= 3.5, duration  # 1 s pre-roll + up to 2 s in all, at 5 fps
            card.screenshot(path=artifacts / "05-event-clip.png")

            # Retention: days kept, MB per app used and its limit, the last prune.
            retention = page.locator("#retention")
            retention.scroll_into_view_if_needed()
            expect(retention.locator('[data-retention="days"]')).to_have_text("events kept 30 days")
            expect(retention.locator('[data-retention="last-prune"]')).to_contain_text("last prune")
            expect(
                retention.locator('tr[data-retention-app="trains"] [data-retention="used"]')
            ).to_contain_text("MB / no limit")
            retention.screenshot(path=artifacts / "06-retention.png")

            # An admin marks the event a false alarm on its card; the mark is stored with it.
            card.get_by_role("button", name=f"Mark event {event_id} false").click()
            expect(card.locator("[data-review]")).to_have_attribute("data-review", "false")
            expect(
                card.get_by_role("button", name=f"Mark event {event_id} false")
            ).to_have_attribute("aria-pressed", "true")
            stored = httpx.get(
                f"{daemon.url}/api/events/{event_id}",
                headers={"Authorization": f"Bearer {viewer_token}"},
            ).json()["review"]
            assert stored is not None and stored["verdict"] == "false"
            marks = page.locator('tr[data-app="trains"] [data-feedback="counted"]')
            expect(marks).to_contain_text("✓0 ✗1")  # one mark: too few for the plan to use
            card.screenshot(path=artifacts / "07-reviewed-event.png")

            # Admin controls work: add a camera, disable it, remove it.
            page.on("dialog", lambda dialog: dialog.accept())
            page.get_by_text("Add camera").click()
            form = page.locator("#camera-form")
            form.get_by_label("Id").fill("yard")
            form.get_by_label("URL").fill("synthetic://?fps=5&size=160x120")
            form.get_by_role("button", name="Add").click()
            yard = page.locator('[data-camera="yard"]')
            expect(yard.locator(".pill")).to_have_attribute("data-state", "streaming")
            yard.get_by_role("button", name="Disable camera yard").click()
            expect(yard.locator(".pill")).to_have_attribute("data-state", "disabled")
            yard.get_by_role("button", name="Remove camera yard").click()
            expect(yard).to_have_count(0)

            # What-if: keep trains, add a second, hypothetical app of the same package (the
            # form names it trains-2); nothing gets deployed.
            page.locator("#what-if").scroll_into_view_if_needed()
            page.locator("#what-if").get_by_label("Package").select_option("trains")
            page.get_by_role("button", name="Add to what-if").click()
            expect(page.locator("#hypo-list")).to_contain_text("trains-2")
            page.get_by_role("button", name="Plan it").click()
            plan = page.locator('[data-testid="dry-run-plan"]')
            expect(plan.locator("tbody tr")).to_have_count(2)
            expect(plan).to_contain_text("trains-2")
            expect(page.locator("#dry-run-result .dry-run-summary")).to_contain_text(
                "proven optimal"  # two apps on one camera: the search proves it in time
            )
            expect(page.locator("#dry-run-result svg.bars")).to_be_visible()
            expect(page.locator("#toasts .toast")).to_have_count(0, timeout=10_000)
            page.locator("#what-if").screenshot(path=artifacts / "03-what-if.png")
            expect(page.locator("#app-rows tr")).to_have_count(1)

            # A viewer sees everything but no admin controls (phone-sized screen). The live
            # stream is blocked this time: the page falls back to polling and still shows events.
            page.get_by_role("button", name="Sign out").click()
            page.route(re.compile(r".*/api/live\b.*"), lambda route: route.abort())
            page.set_viewport_size({"width": 390, "height": 844})
            page.get_by_label("API token").fill(viewer_token)
            page.get_by_role("button", name="Sign in").click()
            expect(page.locator("#role-badge")).to_have_text("viewer")
            expect(camera.locator(".pill")).to_have_attribute("data-state", "streaming")
            page.wait_for_function(FRAME_LOADED)  # polled frames instead of the live view
            expect(camera.locator("img[data-live-view]")).to_have_count(0)
            expect(page.locator("#live-indicator")).to_have_class(re.compile(r"\bpolling\b"))
            expect(page.locator("#event-list li.event").first).to_contain_text("trains")
            expect(page.get_by_text("Add camera")).to_be_hidden()
            expect(page.get_by_role("button", name="Remove app trains")).to_be_hidden()
            viewer_card = page.locator(f'#event-list li.event[data-event="{event_id}"]')
            expect(viewer_card.locator("[data-review]")).to_have_attribute("data-review", "false")
            expect(viewer_card.locator(".event-review")).to_be_hidden()
            page.screenshot(path=artifacts / "04-viewer-phone.png", full_page=True)
        finally:
            browser.close()
    assert page_errors == [], page_errors


# Whole class names: r"\blive\b" would also match "live-indicator".
LIVE = re.compile(r"(^|\s)live(\s|$)")
POLLING = re.compile(r"(^|\s)polling(\s|$)")


@pytest.fixture
def bare_node(tmp_path: Path) -> Iterator[tuple[Daemon, str]]:
    """A serving node without apps; yields the daemon and a viewer token."""
    config = tmp_path / "node.yaml"
    port = free_port()
    settings = node_config(tmp_path / "data", api={"host": "127.0.0.1", "port": port})
    config.write_text(yaml.safe_dump(settings))
    viewer = create_token(config, "viewer")
    daemon = Daemon(config=config, log=tmp_path / "serve.log", port=port)
    daemon.start()
    try:
        yield daemon, viewer["Authorization"][7:]
    finally:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.stop()


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium)")
def test_the_live_stream_opens_with_tickets_never_the_token(bare_node: tuple[Daemon, str]) -> None:
    from playwright.sync_api import expect, sync_playwright

    daemon, viewer_token = bare_node
    urls: list[str] = []
    page_errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.on("request", lambda request: urls.append(request.url))
            page.set_default_timeout(20_000)
            page.goto(daemon.url + "/ui/")
            page.get_by_label("API token").fill(viewer_token)
            page.get_by_role("button", name="Sign in").click()
            indicator = page.locator("#live-indicator")
            expect(indicator).to_have_class(LIVE, timeout=15_000)

            # The node restarts: the spent ticket cannot reopen the stream; a new one does.
            assert daemon.stop(), daemon.log_tail()
            expect(indicator).to_have_class(POLLING, timeout=15_000)
            daemon.start()
            expect(indicator).to_have_class(LIVE, timeout=15_000)
        finally:
            browser.close()
    assert page_errors == [], page_errors
    streams = [url for url in urls if "/api/live?" in url]
    tickets = [re.sub(r".*[?&]ticket=([^&]+).*", r"\1", url) for url in streams]
    assert len(streams) >= 2 and all("ticket=" in url for url in streams), streams
    assert len(set(tickets)) == len(tickets)  # each connection had its own ticket
    assert not any("token=" in url for url in urls), urls
    assert "/api/live?token=" not in daemon.log.read_text()
