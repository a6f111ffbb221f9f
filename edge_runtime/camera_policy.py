"""Which camera URLs and FFmpeg options a node accepts: a pure check, no I/O.

A camera URL makes the node open a connection or a file on its own behalf, so whoever may add
a camera could otherwise make it fetch a cloud metadata service (``http://169.254.169.254/``),
read any file the process can read, or hand FFmpeg options that change what it may open
(``protocol_whitelist``...). :func:`check_camera_url` refuses, with a
:class:`~mainstream.core.errors.PolicyError` naming the reason:

- a scheme the policy does not list (``file``, ``rtsp``, ``rtsps``, ``http``, ``https``,
  ``usb``, ``synthetic``; ``/dev/videoN`` and ``v4l2:`` count as ``usb``);
- a stream whose host is a literal address in a blocked network (link-local and the cloud
  metadata addresses by default), written in any form the resolver accepts (``169.254.169.254``,
  ``2852039166``, ``0xa9.0xfe.0xa9.0xfe``, ``[::ffff:169.254.169.254]``), unless an allowed
  network holds it; or a well-known metadata host name (``metadata.google.internal``...);
- a file outside the allowed folders (judged on the normalised path, so ``..`` cannot leave
  them);
- a device other than ``/dev/videoN`` or a ``/dev/v4l/`` link;
- an FFmpeg option whose key is not on the allow-list, or whose key or value holds ``|`` or
  ``;`` (the separators of OpenCV's option string, which would smuggle in another option).

Out of scope, by design: host names are not resolved (the check does no network I/O), so a name
that resolves to a blocked address, or DNS rebinding, is not caught here; block those at the
network (egress firewall, metadata service hop limit). Likewise symbolic links inside an
allowed folder are not followed: the folders are the operator's.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path, PurePath
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge_runtime.source_types import (
    FileSourceConfig,
    HttpSourceConfig,
    RtspSourceConfig,
    UsbSourceConfig,
    parse_source_url,
    redact_url,
)
from mainstream.core.errors import PolicyError

ALL_SCHEMES: tuple[str, ...] = (
    "file",
    "rtsp",
    "rtsps",
    "http",
    "https",
    "usb",
    "synthetic",
)

DEFAULT_BLOCKED_NETWORKS: tuple[str, ...] = (
    "169.254.0.0/16",  # IPv4 link-local: AWS, Azure, GCP, OpenStack... metadata at .169.254
    "fe80::/10",  # IPv6 link-local
    "100.100.100.200/32",  # Alibaba Cloud metadata
    "fd00:ec2::254/128",  # AWS metadata over IPv6
)

DEFAULT_BLOCKED_HOSTS: tuple[str, ...] = (
    "metadata.google.internal",
    "metadata",
    "instance-data",
    "instance-data.ec2.internal",
)

DEFAULT_FFMPEG_OPTIONS: tuple[str, ...] = (
    "rtsp_transport",
    "rtsp_flags",
    "stimeout",
    "timeout",
    "rw_timeout",
    "fflags",
    "max_delay",
    "buffer_size",
    "reorder_queue_size",
    "analyzeduration",
    "probesize",
)

_HOST_PATTERN = re.compile(r"^[a-z0-9_.-]+$")
_IPV6_PATTERN = re.compile(r"^[0-9a-f:.]+(%[a-z0-9_.-]+)?$")
_DEVICE_PATTERN = re.compile(r"^/dev/(video\d+|v4l/by-(id|path)/[A-Za-z0-9_.:+-]+)$")
_INET_PART = re.compile(r"^(0x[0-9a-f]*|0[0-7]*|[1-9][0-9]*)$")

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class CameraPolicy(BaseModel):
    """What a camera may point at. The node's settings hold one (``camera_policy``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schemes: list[str] = Field(
        default_factory=lambda: list(ALL_SCHEMES),
        description="Camera URL kinds accepted: file, rtsp, rtsps, http, https, usb "
        "(usb:N, /dev/videoN), synthetic",
    )
    file_dirs: list[Path] | None = Field(
        default=None,
        description="Folders camera video files must lie in (relative ones: in data_dir); "
        "null: <data_dir>/media; []: no file cameras",
    )
    blocked_networks: list[str] = Field(
        default_factory=lambda: list(DEFAULT_BLOCKED_NETWORKS),
        description="Addresses a stream URL may not name (link-local and cloud metadata); "
        "host names are not resolved",
    )
    allowed_networks: list[str] = Field(
        default_factory=list,
        description="Exceptions inside blocked_networks, e.g. a zero-conf camera's 169.254.12.0/24",
    )
    blocked_hosts: list[str] = Field(
        default_factory=lambda: list(DEFAULT_BLOCKED_HOSTS),
        description="Host names a stream URL may not name (cloud metadata services)",
    )
    ffmpeg_options: list[str] = Field(
        default_factory=lambda: list(DEFAULT_FFMPEG_OPTIONS),
        description="FFmpeg demuxer options a camera's ffmpeg_options may set; others are refused",
    )

    @field_validator("schemes")
    @classmethod
    def _check_schemes(cls, schemes: list[str]) -> list[str]:
        unknown = sorted(set(schemes) - set(ALL_SCHEMES))
        if unknown:
            raise ValueError(f"unknown camera URL kinds {unknown}; known: {list(ALL_SCHEMES)}")
        return schemes

    @field_validator("blocked_networks", "allowed_networks")
    @classmethod
    def _check_networks(cls, networks: list[str]) -> list[str]:
        checked = []
        for text in networks:
            try:
                checked.append(str(ipaddress.ip_network(text.strip(), strict=False)))
            except ValueError as error:
                raise ValueError(f"{text!r} is not an IP network such as 169.254.0.0/16") from (
                    error
                )
        return checked

    @field_validator("blocked_hosts")
    @classmethod
    def _normalise_hosts(cls, hosts: list[str]) -> list[str]:
        return [host.strip().lower().rstrip(".") for host in hosts]

    def with_file_dirs(self, data_dir: Path) -> CameraPolicy:
        """This policy with `file_dirs` made absolute: null becomes ``<data_dir>/media``."""
        folders = [Path("media")] if self.file_dirs is None else self.file_dirs
        return self.model_copy(update={"file_dirs": [data_dir / folder for folder in folders]})


def check_camera_url(
    url: str,
    policy: CameraPolicy,
    *,
    ffmpeg_options: Mapping[str, str] | None = None,
    working_dir: PurePath | None = None,
) -> None:
    """Raise PolicyError when `policy` refuses the camera `url` or its `ffmpeg_options`.

    `working_dir` is what relative file paths are relative to (default: the process's).
    A URL that does not parse raises InvalidParameterError, as :func:`parse_source_url` does.
    DNS rebinding and names that resolve to blocked addresses are out of scope: nothing is
    resolved here (see the module docstring).
    """
    check_ffmpeg_options(ffmpeg_options or {}, policy)
    source = parse_source_url(url)
    shown = redact_url(url.strip())
    scheme = _scheme_of(url, source)
    if scheme not in policy.schemes:
        raise PolicyError(
            f"camera URL {shown!r}: the {scheme!r} kind is not allowed here "
            f"(camera_policy.schemes: {', '.join(policy.schemes) or 'none'})"
        )
    if isinstance(source, FileSourceConfig):
        _check_file(shown, source.path, policy, working_dir)
    elif isinstance(source, RtspSourceConfig | HttpSourceConfig):
        _check_host(shown, source.url, policy)
    elif (
        isinstance(source, UsbSourceConfig)
        and isinstance(source.device, str)
        and not _is_video_device(source.device)
    ):
        raise PolicyError(
            f"camera URL {shown!r}: only video devices (/dev/videoN, /dev/v4l/by-id/...) "
            "may be opened"
        )


def check_ffmpeg_options(options: Mapping[str, str], policy: CameraPolicy) -> None:
    """Raise PolicyError for an option key not on the allow-list or a separator in a value."""
    allowed = set(policy.ffmpeg_options)
    for key, value in options.items():
        if key not in allowed:
            raise PolicyError(
                f"ffmpeg option {key!r} is not allowed (camera_policy.ffmpeg_options: "
                f"{', '.join(sorted(allowed)) or 'none'})"
            )
        if any(char in str(value) for char in "|;") or any(ord(c) < 32 for c in str(value)):
            raise PolicyError(
                f"ffmpeg option {key!r}: the value may not hold '|', ';' or control characters"
            )


def parse_host_address(host: str) -> Address | None:
    """The IP address a URL host names literally, in any form getaddrinfo accepts; else None.

    Besides dotted quads and IPv6 this reads the inet_aton forms (``2852039166``,
    ``0xa9fea9fe``, ``169.254.43518``, octal ``0251.0376.0251.0376``), and IPv4-mapped IPv6
    addresses (and NAT64 and 6to4 ones) become the IPv4 address they reach.
    """
    text = host.strip().lower().removeprefix("[").removesuffix("]").rstrip(".")
    if ":" in text:
        try:
            address = ipaddress.IPv6Address(text.split("%", 1)[0])
        except ValueError:
            return None
        if address in _NAT64:  # 64:ff9b::a.b.c.d reaches a.b.c.d through a NAT64 gateway
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        return address.ipv4_mapped or address.sixtofour or address
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or not all(_INET_PART.fullmatch(part) for part in parts):
        return None
    numbers = []
    for part in parts:
        if part.startswith("0x"):
            numbers.append(int(part[2:] or "0", 16))
        elif len(part) > 1:
            numbers.append(int(part, 8) if part.startswith("0") else int(part))
        else:
            numbers.append(int(part))
    *head, last = numbers
    if any(number > 255 for number in head) or last >= 256 ** (5 - len(numbers)):
        return None
    value = 0
    for number in head:
        value = value * 256 + number
    value = value * 256 ** (5 - len(numbers)) + last
    return ipaddress.IPv4Address(value)


def _scheme_of(url: str, source: object) -> str:
    if isinstance(source, FileSourceConfig):
        return "file"
    if isinstance(source, UsbSourceConfig):
        return "usb"
    if isinstance(source, RtspSourceConfig | HttpSourceConfig):
        return url.strip().partition(":")[0].lower()  # rtsp, rtsps, http or https
    return "synthetic"


def _is_video_device(path: str) -> bool:
    return bool(_DEVICE_PATTERN.fullmatch(path)) and not path.endswith(("/.", "/.."))


def _check_host(shown: str, url: str, policy: CameraPolicy) -> None:
    host = (urlsplit(url).hostname or "").lower()
    bare = host.rstrip(".")
    if not (_HOST_PATTERN.fullmatch(bare) or _IPV6_PATTERN.fullmatch(bare)):
        raise PolicyError(
            f"camera URL {shown!r}: the host must be a name of letters, digits, '.', '-', '_' "
            "or an IP address"
        )
    if bare in policy.blocked_hosts:
        raise PolicyError(
            f"camera URL {shown!r}: host {bare!r} is a cloud metadata service "
            "(camera_policy.blocked_hosts)"
        )
    address = parse_host_address(bare)
    if address is None:
        return
    blocked = _first_holding(address, policy.blocked_networks)
    if blocked is not None and _first_holding(address, policy.allowed_networks) is None:
        raise PolicyError(
            f"camera URL {shown!r}: address {address} lies in the blocked network {blocked} "
            "(link-local or cloud metadata; allow it in camera_policy.allowed_networks)"
        )


def _first_holding(address: Address, networks: list[str]) -> Network | None:
    for text in networks:
        network = ipaddress.ip_network(text, strict=False)
        if address.version == network.version and address in network:
            return network
    return None


def _check_file(
    shown: str, path: PurePath, policy: CameraPolicy, working_dir: PurePath | None
) -> None:
    base = str(working_dir) if working_dir is not None else os.getcwd()
    resolved = PurePath(os.path.normpath(os.path.join(base, str(path))))
    folders = [PurePath(os.path.normpath(str(folder))) for folder in policy.file_dirs or []]
    if not any(folder in resolved.parents for folder in folders):
        listing = ", ".join(str(folder) for folder in folders) or "none"
        raise PolicyError(
            f"camera URL {shown!r}: video files must lie in an allowed folder "
            f"(camera_policy.file_dirs: {listing})"
        )
