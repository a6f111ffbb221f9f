"""Settings of the event sinks (MQTT, webhooks), as they appear in the node config.

Kept apart from the sink code so that reading a config never imports the MQTT or HTTP client.
Secrets (`mqtt.password`, `webhooks.secret`) belong in the environment
(`MAINSTREAM_MQTT__PASSWORD`, `MAINSTREAM_WEBHOOKS__SECRET`), never in a config file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

TransitionName = Literal["new", "update", "end"]
ALL_TRANSITIONS: tuple[TransitionName, ...] = ("new", "update", "end")

_TOPIC_PREFIX_PATTERN = r"^[^/#+\s][^#+\s]*$"


class MqttSettings(BaseModel):
    """Where to publish events, app states and camera states over MQTT."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = Field(default=False, description="Publish events over MQTT")
    host: str = Field(default="localhost", min_length=1, description="Broker host name or address")
    port: int = Field(default=1883, ge=1, le=65535, description="Broker port")
    username: str | None = Field(default=None, description="Broker user name, if it needs one")
    password: SecretStr | None = Field(
        default=None, description="From the environment only (MAINSTREAM_MQTT__PASSWORD)"
    )
    topic_prefix: str = Field(
        default="mainstream",
        pattern=_TOPIC_PREFIX_PATTERN,
        description="First topic level; topics are <prefix>/<node>/...",
    )
    client_id: str | None = Field(
        default=None, description="MQTT client id; default: mainstream-<node name>"
    )
    keepalive_s: int = Field(default=30, ge=5, le=3600, description="MQTT keep-alive interval")
    tls: bool = Field(default=False, description="Connect with TLS")
    ca_file: Path | None = Field(
        default=None, description="CA bundle for TLS; default: the system's trusted CAs"
    )
    queue_size: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        description="Messages kept while the broker is unreachable; beyond it the oldest go",
    )
    reconnect_min_delay_s: int = Field(
        default=1, ge=1, description="First wait before reconnecting; doubles up to the max"
    )
    reconnect_max_delay_s: int = Field(
        default=30, ge=1, description="Longest wait between reconnection attempts"
    )
    publish_updates: bool = Field(
        default=True,
        description="Also publish 'update' messages (a better peak, or periodic ones: "
        "runtime.event_update_every_frames), not only new/end",
    )
    publish_snapshots: bool = Field(
        default=False,
        description="Publish the best snapshot (JPEG) of each camera's latest event, retained, "
        "on <prefix>/<node>/cameras/<camera>/snapshot (on with ha_discovery too)",
    )
    ha_discovery: bool = Field(
        default=False,
        description="Announce Home Assistant entities (MQTT discovery, retained): a "
        "binary_sensor per app on its camera, a camera image per camera; removed when "
        "deleted",
    )
    ha_discovery_prefix: str = Field(
        default="homeassistant",
        pattern=_TOPIC_PREFIX_PATTERN,
        description="Home Assistant's discovery topic prefix",
    )

    @field_validator("topic_prefix", "ha_discovery_prefix")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        if value.endswith("/"):
            raise ValueError("must not end with '/'")
        return value

    @property
    def snapshots_published(self) -> bool:
        """Whether camera snapshots go out: asked for, or needed by Home Assistant's cameras."""
        return self.publish_snapshots or self.ha_discovery

    @model_validator(mode="after")
    def _check_delays(self) -> MqttSettings:
        if self.reconnect_max_delay_s < self.reconnect_min_delay_s:
            raise ValueError(
                f"reconnect_max_delay_s ({self.reconnect_max_delay_s}) must be >= "
                f"reconnect_min_delay_s ({self.reconnect_min_delay_s})"
            )
        return self


class WebhookTarget(BaseModel):
    """One receiver URL, for every app or only for some."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    url: str = Field(description="http:// or https:// URL that receives a POST per event change")
    apps: list[str] = Field(
        default_factory=list, description="Only events of these apps; empty: every app"
    )
    transitions: list[TransitionName] = Field(
        default_factory=lambda: list(ALL_TRANSITIONS),
        min_length=1,
        description="Which event changes to send",
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.lower().startswith(("http://", "https://")) or len(value) < 10:
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value


class WebhookSettings(BaseModel):
    """Event delivery over HTTP POST, signed with a shared secret, with retries."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    targets: list[WebhookTarget] = Field(
        default_factory=list, description="Receivers: url, apps (empty: all), transitions"
    )
    secret: SecretStr | None = Field(
        default=None,
        description="HMAC-SHA256 signing key; from the environment only "
        "(MAINSTREAM_WEBHOOKS__SECRET). Without it requests are sent unsigned",
    )
    timeout_s: float = Field(default=5.0, gt=0, le=300, description="Per request")
    max_attempts: int = Field(default=5, ge=1, le=30, description="Tries per delivery")
    backoff_initial_s: float = Field(
        default=1.0, ge=0, description="Wait before the first retry; doubles each retry"
    )
    backoff_max_s: float = Field(default=60.0, ge=0, description="Longest wait between tries")
    queue_size: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        description="Deliveries waiting per target; beyond it the oldest is dead-lettered",
    )
    dead_letter_max_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=4096,
        description="Size at which the dead-letter file is rotated to `<file>.1`",
    )
    dead_letter_keep: int = Field(
        default=3, ge=0, le=100, description="Rotated dead-letter files kept; older are deleted"
    )
