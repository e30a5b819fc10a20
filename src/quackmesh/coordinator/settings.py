"""Coordinator settings from ``QUACKMESH_*`` environment variables or ``quackmesh.toml``.

Everything has a safe embedded default: SQLite under ``$QUACKMESH_HOME`` (default
``~/.quackmesh``), blobs on the local filesystem, the SQL ledger. The development faucet
only works with ``dev_mode`` on.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

__all__ = ["Settings", "default_home"]


def default_home() -> Path:
    return Path(os.environ.get("QUACKMESH_HOME") or Path.home() / ".quackmesh")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="QUACKMESH_", toml_file="quackmesh.toml", extra="ignore"
    )

    home: Path = Field(default_factory=default_home)
    database_url: str | None = Field(default=None, description="default: SQLite in home")
    blob_dir: Path | None = Field(default=None, description="default: home/blobs")
    secret_key: str | None = Field(
        default=None, description="HMAC key for capability URLs; default: generated in home"
    )
    dev_mode: bool = Field(default=False, description="enables the development faucet")

    auth_window_s: int = Field(default=60, ge=5, le=3600)
    offline_after_s: float = Field(default=30.0, gt=0)
    lease_s: float = Field(default=60.0, gt=0, description="lease length; heartbeats extend")
    sweep_interval_s: float = Field(default=2.0, gt=0)
    capability_ttl_s: int = Field(default=900, gt=0)
    fee_bps: int = Field(default=500, ge=0, le=10_000, description="protocol fee, 1/100 %")
    faucet_max: int = Field(default=100_000_000_000, gt=0, description="micro-DUCK per call")
    max_upload_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    max_result_bytes: int = Field(default=64 * 1024 * 1024, gt=0)

    # --- trust and market (issue 3); amounts in micro-DUCK, see README "Trust" ---
    min_stake: int = Field(
        default=1_000_000_000, ge=0, description="stake a node needs for paid work (1,000 DUCK)"
    )
    unbonding_s: float = Field(
        default=7 * 86_400.0, ge=0, description="unstaked DUCK stays slashable this long"
    )
    slash_bps: int = Field(default=1_000, ge=0, le=10_000, description="stake lost per bad result")
    adaptive_trust: int = Field(
        default=10, ge=1, description="consecutive valid results before adaptive spot checks"
    )
    adaptive_min_check: float = Field(
        default=0.02, ge=0, le=1, description="floor of a trusted node's spot-check probability"
    )
    honeypot_rate: float = Field(
        default=0.1, ge=0, le=1, description="chance a `honeypot` job's node gets a known answer"
    )
    dispute_window_s: float = Field(default=86_400.0, gt=0)
    dispute_fee: int = Field(default=1_000_000, ge=0, description="paid to an upheld provider")
    dispute_replicas: int = Field(default=2, ge=1, le=10)
    dispute_min_reputation: float = Field(default=0.6, ge=0, le=1)
    match_window_s: float = Field(
        default=1.0, ge=0, description="head start a fresh task gives better-scored nodes"
    )
    priority_stake_step: int = Field(
        default=1_000_000_000, gt=0, description="client stake per priority level (1,000 DUCK)"
    )
    rental_settle_s: float = Field(default=60.0, gt=0, description="rentals pay out this often")
    reputation_alpha: float = Field(default=0.1, gt=0, le=1, description="EWMA weight")

    # --- dashboard sessions and events (issue 5) ---
    session_ttl_s: float = Field(default=12 * 3600.0, gt=0, description="browser session life")
    siwe_chain_id: int = Field(default=1, ge=1, description="Chain ID SIWE messages must name")
    events_poll_s: float = Field(
        default=0.05, gt=0, description="event fan-out looks for new rows this often"
    )
    events_gap_grace_s: float = Field(
        default=2.0, ge=0, description="how long the stream waits for a missing event id"
    )

    # --- webhooks (issue 5) ---
    webhook_poll_s: float = Field(
        default=0.25, gt=0, le=60, description="the dispatcher looks for events this often"
    )
    webhook_timeout_s: float = Field(
        default=5.0, gt=0, le=60, description="whole-request limit of one delivery attempt"
    )
    webhook_backoff_s: float = Field(
        default=2.0, gt=0, description="first retry delay; doubles with each attempt"
    )
    webhook_max_backoff_s: float = Field(
        default=600.0, gt=0, description="retry delays never exceed this"
    )
    webhook_max_attempts: int = Field(
        default=8, ge=1, le=50, description="attempts before a delivery is marked failed"
    )
    webhook_concurrency: int = Field(
        default=16, ge=1, le=1024, description="deliveries in flight at once, all webhooks"
    )
    webhook_allow_private: bool = Field(
        default=False,
        description="allow webhook URLs on loopback/private networks (always on in dev_mode)",
    )

    # --- on-chain settlement (issue 7); see README "On-chain settlement" ---
    chain: str = Field(
        default="off",
        description="off, local (an in-process EVM, deployed at start) or a JSON-RPC URL",
    )
    chain_deployment: Path | None = Field(
        default=None,
        description="JSON written by `quackmesh chain deploy`; default: home/chain.json",
    )
    chain_key_file: Path | None = Field(
        default=None, description="keystore of the operator key (posts roots, signs vouchers)"
    )
    chain_key_password: str | None = Field(
        default=None, description="the keystore's password (or chain_key_password_file)"
    )
    chain_key_password_file: Path | None = None
    chain_confirmations: int = Field(
        default=2, ge=0, le=1000, description="blocks on top before a deposit counts (URL)"
    )
    chain_poll_s: float = Field(default=1.0, gt=0, description="deposit watcher interval")
    chain_epoch_s: float = Field(
        default=60.0, gt=0, description="a balance root is posted this often (if changed)"
    )
    voucher_ttl_s: int = Field(
        default=3600, ge=60, le=30 * 86_400, description="a withdrawal voucher's lifetime"
    )
    chain_faucet_gas_wei: int = Field(
        default=10**17, ge=0, description="ETH the dev faucet sends for gas (chain mode)"
    )

    # --- inference gateway (issue 6); see coordinator/inference/__init__.py ---
    inference_max_attempts: int = Field(
        default=3, ge=1, le=10, description="nodes one request may try before it fails"
    )
    inference_queue_s: float = Field(
        default=10.0, gt=0, description="a request waits this long for a free serving node"
    )
    inference_pickup_s: float = Field(
        default=5.0, gt=0, description="a node must open its answer stream within this"
    )
    inference_first_chunk_s: float = Field(
        default=60.0, gt=0, description="first answer line within this of the stream opening"
    )
    inference_stall_s: float = Field(
        default=15.0, gt=0, description="longest silence between two answer lines"
    )
    inference_deadline_s: float = Field(
        default=300.0, gt=0, description="a node's whole answer (InferenceWork.deadline_s)"
    )
    inference_default_max_tokens: int = Field(
        default=512, ge=1, description="max_tokens when a generation request names none"
    )
    inference_max_inputs: int = Field(
        default=2048, ge=1, le=100_000, description="texts one embeddings request may send"
    )
    inference_max_stream_bytes: int = Field(
        default=64 * 1024 * 1024, gt=0, description="the largest answer stream a node may send"
    )
    inference_check_rate: float = Field(
        default=0.05, ge=0, le=1, description="chance a trusted node's answer is re-run elsewhere"
    )
    inference_honeypot_rate: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="chance a node that answered a request is sent a known-answer request",
    )
    inference_check_adaptive: bool = Field(
        default=True,
        description="check every answer of a (node, model) until adaptive_trust agree in a row",
    )
    inference_cosine_min: float = Field(
        default=0.999, ge=-1, le=1, description="embeddings agree at this cosine or above"
    )
    inference_latency_alpha: float = Field(
        default=0.2, gt=0, le=1, description="EWMA weight of a node's time to first chunk"
    )
    inference_directory_s: float = Field(
        default=1.0, gt=0, description="serving nodes (stake, models) are re-read this often"
    )
    inference_key_cache_s: float = Field(
        default=5.0, ge=0, description="API key lookups are cached this long (revoke: at once)"
    )
    inference_max_keys: int = Field(default=100, ge=1, description="active API keys per wallet")
    rate_inference_per_s: float = Field(default=200.0, gt=0)
    rate_inference_burst: int = Field(default=400, ge=1)

    rate_submit_per_s: float = Field(default=5.0, gt=0)
    rate_submit_burst: int = Field(default=30, ge=1)
    rate_read_per_s: float = Field(default=50.0, gt=0)
    rate_read_burst: int = Field(default=300, ge=1)

    log_level: str = "INFO"
    access_log: bool = True

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @property
    def chain_enabled(self) -> bool:
        return self.chain.strip().lower() != "off"

    @property
    def chain_is_local(self) -> bool:
        return self.chain.strip().lower() == "local"

    def resolved_chain_deployment(self) -> Path:
        return self.chain_deployment or self.home / "chain.json"

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'coordinator.db'}"

    def resolved_blob_dir(self) -> Path:
        return self.blob_dir or self.home / "blobs"

    def resolved_secret(self) -> bytes:
        """The capability-URL key: configured, or generated once and kept (0600) in home."""
        if self.secret_key:
            return self.secret_key.encode()
        path = self.home / "secret.key"
        if not path.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process created it first
            else:
                with os.fdopen(fd, "w") as fh:
                    fh.write(secrets.token_hex(32))
        return path.read_text().strip().encode()
