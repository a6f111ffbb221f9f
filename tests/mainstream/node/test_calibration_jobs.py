"""Calibration jobs through the real HTTP API of a real node: the app's package is measured on a
labelled clip in a child process, the result is stored as the package's next version and the
app is moved to it (a re-plan on the clip's counts); the same clip again, a request without
labels or `no_events`, and footage outside the datasets folder are refused before any work;
`mainstream jobs calibrate` calls the same service."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from api.app import create_app
from mainstream.cli.main import main
from mainstream.core.errors import PackageError
from mainstream.core.manifest import Manifest
from mainstream.core.package import read_package, write_package
from mainstream.node.node import Node
from mainstream.node.settings import Settings
from mainstream.node.training_jobs import check_same_models
from scheduler.problem import Profile
from tests.support.nodes import BASE_FILE, TinyPackages, node_config, served_in_thread
from tests.support.training import ADMIN, ADMIN_TOKEN, make_labelled_clip, wait_for_job
from trainer.datasets import write_event_csv
from trainer.event_stats import EventInterval

pytestmark = pytest.mark.slow

FINISHED = {"succeeded", "failed", "cancelled"}


def test_a_calibration_job_makes_the_next_version_and_the_app_runs_it(
    tmp_path: Path,
    tiny_packages: TinyPackages,
    measured_profile: Profile,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "data"
    tiny_packages.register_base(data)
    door = data / "datasets" / "door"
    make_labelled_clip(door, "trains")
    write_event_csv(door / "buses.csv", [EventInterval(10, 20, "buses")])
    monkeypatch.setenv("MAINSTREAM_ADMIN_TOKEN", ADMIN_TOKEN)
    node = Node(Settings(**node_config(data)))
    with node.registry.transaction() as transaction:  # measured once per session
        transaction.save_profile(measured_profile.base_model, "keras", measured_profile)
    body = {"video": "door/street.avi", "labels": "door/street.csv"}

    with (
        served_in_thread(create_app(node)) as url,
        httpx.Client(base_url=url, headers=ADMIN, timeout=60) as client,
    ):
        with open(tiny_packages.trains, "rb") as stream:
            uploaded = client.post("/api/packages", files={"file": ("trains.mpkg", stream)})
        assert uploaded.status_code == 201, uploaded.text
        assert client.post("/api/apps", json={"name": "trains"}).status_code == 201

        # -- refused before any work ----------------------------------------------------------
        calibrations = "/api/apps/trains/calibrations"
        no_labels = client.post(calibrations, json={"video": "door/street.avi"})
        assert no_labels.status_code == 422
        assert "labels" in no_labels.json()["detail"] and "no_events" in no_labels.json()["detail"]
        both = client.post(calibrations, json={**body, "no_events": True})
        assert both.status_code == 422
        missing_app = client.post("/api/apps/nowhere/calibrations", json=body)
        assert missing_app.status_code == 404 and "nowhere" in missing_app.json()["detail"]
        for field, bad in (("video", "../street.avi"), ("video", "door/gone.avi")):
            answer = client.post(calibrations, json={**body, field: bad})
            assert answer.status_code == 422 and field in answer.json()["detail"], answer.text
        other_class = client.post(calibrations, json={**body, "labels": "door/buses.csv"})
        assert other_class.status_code == 422 and "'trains'" in other_class.json()["detail"]
        assert client.get("/api/training-jobs").json() == []

        # -- a job runs to success: the next version, the app on it, the plan re-made ---------
        submitted = client.post(calibrations, json=body)
        assert submitted.status_code == 202, submitted.text
        job = submitted.json()
        assert job["kind"] == "calibration" and job["mode"] == "local"
        assert job["calibration"]["package_version"] == 1
        assert job["calibration"]["threshold"] == 0.5  # the app's
        done, progress = wait_for_job(client, job["id"], FINISHED)
        assert done["state"] == "succeeded", (
            done,
            client.get(f"/api/training-jobs/{job['id']}/log").text,
        )
        fractions = [item["fraction"] for item in progress]
        assert fractions == sorted(fractions) and fractions[-1] == 1.0
        log = client.get(f"/api/training-jobs/{job['id']}/log").text
        assert "calibrated trains on street.avi (80 frames" in log
        assert not list((data / "jobs" / job["id"]).rglob("*.mpkg"))  # the registry has it
        assert done["package"]["app"] == "trains" and done["package"]["version"] == 2
        assert done["app"] == "trains" and done["deploy_error"] is None
        app = client.get("/api/apps/trains").json()["app"]
        assert app["package_version"] == 2 and app["package_sha256"] == done["package"]["sha256"]
        manifest = Manifest.model_validate(client.get("/api/packages/trains/2").json()["manifest"])
        by_cut = {row["cut_point"]: row["clip"] for row in done["candidates"]}
        for candidate in manifest.candidates:
            (clip,) = candidate.calibrations
            assert clip.clip == "street.avi" and clip.threshold == 0.5
            assert clip.counts.model_dump() == by_cut[candidate.cut_point]
            assert clip.counts.positive_frames + clip.counts.negative_frames == 80
            assert clip.counts.events > 0
        history = client.get("/api/schedule/history").json()
        assert any("trains calibrated on street.avi" in plan["reason"] for plan in history)

        # -- the same clip again: the package already counts it --------------------------------
        again = client.post(calibrations, json=body)
        assert again.status_code == 409
        assert "already calibrated on street.avi" in again.json()["detail"]

        # -- the CLI client: the same service, the same one-line errors ------------------------
        monkeypatch.setenv("MAINSTREAM_SERVER", url)
        monkeypatch.setenv("MAINSTREAM_TOKEN", ADMIN_TOKEN)
        arguments = ["jobs", "calibrate", "trains", "--video", "door/street.avi"]
        with pytest.raises(SystemExit) as refused:
            main(arguments)
        assert refused.value.code == 2 and "--no-events" in capsys.readouterr().err
        with pytest.raises(SystemExit) as conflict:
            main([*arguments, "--no-events"])
        assert conflict.value.code != 0
        assert "HTTP 409" in capsys.readouterr().err
        main(["jobs", "list"])
        listed = capsys.readouterr().out
        assert "calibrate trains on door/street.avi  package trains v2" in listed
        assert len(client.get("/api/training-jobs").json()) == 1


def test_a_calibrated_package_must_carry_the_models_it_measured(
    tmp_path: Path, tiny_packages: TinyPackages
) -> None:
    check_same_models(tiny_packages.trains, tiny_packages.trains_v2)  # other figures only
    with read_package(tiny_packages.trains) as package:
        first, second = package.manifest.candidates
        # The first cut point's model replaced by another one, its checksum made to match.
        swapped = first.model_copy(update={"sha256": second.sha256})
        manifest = package.manifest.model_copy(
            update={"candidates": [swapped, second], "checksums": {}}
        )
        files = {c.file: package.root / c.file for c in package.manifest.candidates}
        files[first.file] = package.root / second.file
        files[BASE_FILE] = package.root / BASE_FILE
        tampered = write_package(tmp_path / "tampered.mpkg", manifest, files)
    for other in (tampered, tiny_packages.buses):
        with pytest.raises(PackageError, match="does not carry the models"):
            check_same_models(tiny_packages.trains, other)
