"""The camera URL policy: schemes, blocked addresses in every spelling, file folders, FFmpeg
options. Pure: nothing here opens a file or a socket."""

from __future__ import annotations

import ipaddress
from pathlib import Path, PurePath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_runtime.camera_policy import (
    DEFAULT_FFMPEG_OPTIONS,
    CameraPolicy,
    check_camera_url,
    check_ffmpeg_options,
    parse_host_address,
)
from mainstream.core.errors import InvalidParameterError, PolicyError

DATA = Path("/srv/mainstream")
POLICY = CameraPolicy().with_file_dirs(DATA)
HERE = PurePath("/srv/work")

link_local_v4 = st.integers(0xA9FE0000, 0xA9FEFFFF).map(ipaddress.IPv4Address)


def spellings(address: ipaddress.IPv4Address) -> list[str]:
    """Ways getaddrinfo (inet_aton) reads the same IPv4 address."""
    a, b, c, d = address.packed
    value = int(address)
    return [
        str(address),
        str(value),
        hex(value),
        f"{a}.{b}.{c * 256 + d}",
        f"{a}.{b * 65536 + c * 256 + d}",
        ".".join(hex(part) for part in (a, b, c, d)),
        ".".join(f"0{part:o}" for part in (a, b, c, d)),
        f"[::ffff:{address}]",
        f"[64:ff9b::{address}]",
        f"{address}.",
    ]


@given(link_local_v4, st.sampled_from(["http", "https", "rtsp", "rtsps"]), st.integers(0, 9))
def test_link_local_addresses_are_refused_however_written(
    address: ipaddress.IPv4Address, scheme: str, spelling: int
) -> None:
    host = spellings(address)[spelling]
    with pytest.raises(PolicyError, match=r"blocked network 169\.254\.0\.0/16"):
        check_camera_url(f"{scheme}://user:pw@{host}:8080/stream", POLICY)


@given(st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address), st.integers(0, 6))
def test_every_spelling_parses_to_the_same_address(
    address: ipaddress.IPv4Address, spelling: int
) -> None:
    assert parse_host_address(spellings(address)[spelling]) == address


@given(st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address))
def test_addresses_outside_the_blocked_networks_are_accepted(
    address: ipaddress.IPv4Address,
) -> None:
    blocked = address in ipaddress.ip_network("169.254.0.0/16") or str(address) == (
        "100.100.100.200"
    )
    try:
        check_camera_url(f"rtsp://{address}:554/stream1", POLICY)
    except PolicyError:
        assert blocked
    else:
        assert not blocked


@pytest.mark.parametrize(
    "url",
    [
        "http://[fe80::1%25eth0]/video.mjpg",
        "http://[fe80::abcd]/video.mjpg",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://100.100.100.200/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://METADATA.google.internal./computeMetadata/v1/",
        "http://metadata/computeMetadata/v1/",
        "rtsp://instance-data/latest",
        "http://evil.example\\@169.254.169.254/",
    ],
)
def test_metadata_services_are_refused(url: str) -> None:
    with pytest.raises(PolicyError, match="camera URL"):
        check_camera_url(url, POLICY)


@pytest.mark.parametrize(
    "url",
    [
        "rtsp://admin:secret@10.0.0.5:554/stream1",
        "rtsps://cam.example.com/live",
        "http://192.168.1.20/mjpg/video.mjpg",
        "https://[2001:db8::5]/video.mjpg",
        "rtsp://127.0.0.1:8554/test",
        "usb:0",
        "/dev/video2",
        "usb:/dev/v4l/by-id/usb-Logitech_C920-video-index0",
        "synthetic://?fps=10&size=320x240",
        "/srv/mainstream/media/yard.mp4",
        "file:///srv/mainstream/media/sub/yard.mp4",
        "../mainstream/media/yard.mp4",  # relative to the working folder /srv/work
    ],
)
def test_ordinary_cameras_are_accepted(url: str) -> None:
    check_camera_url(url, POLICY, working_dir=HERE)


@pytest.mark.parametrize(
    "url",
    [
        "/etc/passwd",
        "file:///etc/shadow",
        "/srv/mainstream/media/../registry.db",
        "/srv/mainstream/media-other/x.mp4",
        "media/yard.mp4",  # relative to /srv/work, not to the data folder
        "/srv/mainstream/media",  # the folder itself is not a video
    ],
)
def test_files_outside_the_allowed_folders_are_refused(url: str) -> None:
    with pytest.raises(PolicyError, match="allowed folder"):
        check_camera_url(url, POLICY, working_dir=HERE)


def test_file_folders_default_to_the_data_dirs_media_and_can_be_none() -> None:
    assert CameraPolicy().with_file_dirs(DATA).file_dirs == [DATA / "media"]
    relative = CameraPolicy(file_dirs=[Path("clips"), Path("/videos")]).with_file_dirs(DATA)
    assert relative.file_dirs == [DATA / "clips", Path("/videos")]
    no_files = CameraPolicy(file_dirs=[]).with_file_dirs(DATA)
    with pytest.raises(PolicyError, match=r"file_dirs: none"):
        check_camera_url("/srv/mainstream/media/yard.mp4", no_files)


@pytest.mark.parametrize(
    "url", ["/dev/sda", "usb:/dev/mem", "/dev/v4l/by-id/../../sda", "/dev/v4l/by-id/.."]
)
def test_devices_other_than_video_devices_are_refused(url: str) -> None:
    with pytest.raises(PolicyError, match="video devices"):
        check_camera_url(url, POLICY)


def test_schemes_can_be_narrowed() -> None:
    policy = CameraPolicy(schemes=["rtsps", "https"]).with_file_dirs(DATA)
    check_camera_url("rtsps://cam.example.com/live", policy)
    for url in ("rtsp://cam.example.com/live", "synthetic://", "usb:0", "/dev/video0"):
        with pytest.raises(PolicyError, match="kind is not allowed"):
            check_camera_url(url, policy)
    with pytest.raises(ValueError, match="unknown camera URL kinds"):
        CameraPolicy(schemes=["gopher"])


def test_allowed_networks_open_a_hole_in_the_blocked_ones() -> None:
    policy = CameraPolicy(allowed_networks=["169.254.12.0/24"]).with_file_dirs(DATA)
    check_camera_url("http://169.254.12.7/video.mjpg", policy)
    with pytest.raises(PolicyError, match="blocked network"):
        check_camera_url("http://169.254.169.254/latest/meta-data/", policy)
    with pytest.raises(ValueError, match="not an IP network"):
        CameraPolicy(allowed_networks=["somewhere"])


def test_an_unparsable_url_is_still_a_parameter_error() -> None:
    with pytest.raises(InvalidParameterError, match="supported scheme"):
        check_camera_url("gopher://x/", POLICY)


def test_the_refusal_does_not_reveal_the_password() -> None:
    with pytest.raises(PolicyError) as caught:
        check_camera_url("rtsp://admin:hunter2@169.254.169.254/", POLICY)
    assert "hunter2" not in str(caught.value) and "***" in str(caught.value)


@given(
    st.sampled_from(DEFAULT_FFMPEG_OPTIONS),
    st.from_regex(r"[A-Za-z0-9_+,.:-]{0,12}", fullmatch=True),
)
def test_known_safe_ffmpeg_options_are_accepted(key: str, value: str) -> None:
    check_ffmpeg_options({key: value}, POLICY)
    check_camera_url("rtsp://10.0.0.5/s", POLICY, ffmpeg_options={key: value})


@pytest.mark.parametrize(
    "key", ["protocol_whitelist", "headers", "http_proxy", "user_agent", "rtsp_transport "]
)
def test_other_ffmpeg_options_are_refused_by_name(key: str) -> None:
    with pytest.raises(PolicyError, match=f"ffmpeg option {key!r} is not allowed"):
        check_camera_url("rtsp://10.0.0.5/s", POLICY, ffmpeg_options={key: "x"})


@pytest.mark.parametrize("value", ["tcp|protocol_whitelist;file,http", "1;2", "a\nb"])
def test_values_cannot_smuggle_in_another_option(value: str) -> None:
    with pytest.raises(PolicyError, match="may not hold"):
        check_ffmpeg_options({"rtsp_transport": value}, POLICY)


def test_the_allow_list_is_a_setting() -> None:
    policy = CameraPolicy(ffmpeg_options=["rtsp_transport", "user_agent"])
    check_ffmpeg_options({"user_agent": "mainstream"}, policy)
    with pytest.raises(PolicyError, match="'probesize' is not allowed"):
        check_ffmpeg_options({"probesize": "65536"}, policy)
