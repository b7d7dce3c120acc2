"""Application settings: environment variables and an optional `.env` file, nothing else."""

import ipaddress
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from limits import parse_many
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url

from app.kit.db.url import normalize_database_url

PROJECT_ROOT = Path(__file__).resolve().parents[1]

CommaSeparated = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # Server processes sharing the port (one per core is the usual choice).
    workers: int = Field(default=1, ge=1, le=64)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # json: one object per line, with request ids, routes, statuses, durations, hashed users.
    log_format: Literal["text", "json"] = "text"
    # GET /metrics (Prometheus). Off by default: what it shows is for operators only.
    metrics_enabled: bool = False

    database_url: str = "sqlite:///./data/chat.db"
    # A read replica of DATABASE_URL for the reads that may lag behind writes (the sidebar's
    # list and search, the feedback export: docs/scaling.md); empty: they use DATABASE_URL.
    database_read_url: str = ""
    database_echo: bool = False
    database_pool_size: int = Field(default=10, ge=1)
    database_pool_recycle_seconds: int = Field(default=300, ge=1)
    # How long a request waits for a pooled connection before it is answered 503 (SQLAlchemy's
    # default, 30 s).
    database_pool_timeout_seconds: float = Field(default=30.0, gt=0)
    sqlite_busy_timeout_ms: int = Field(default=30_000, ge=0)
    migrate_on_startup: bool = True

    message_max_chars: int = Field(default=32_000, ge=1)
    history_max_messages: int = Field(default=50, ge=1)

    assistant_provider: Literal["knowledge_base", "openai", "echo"] = "knowledge_base"
    assistant_stream_delay_ms: int = Field(default=15, ge=0)
    assistant_system_prompt: str = (
        "You are a helpful assistant. Answer clearly and concisely, in the user's language."
    )
    assistant_context_tokens: int = Field(default=8_000, ge=256)
    assistant_rag: bool = False
    knowledge_base_dir: str = "knowledge"
    knowledge_base_top_k: int = Field(default=3, ge=1, le=20)

    # OpenAI-compatible provider; the names are the SDK's own environment variables.
    openai_base_url: str | None = None
    openai_api_key: SecretStr | None = None
    openai_model: str = "gpt-4o-mini"
    openai_temperature: float | None = Field(default=None, ge=0, le=2)
    openai_max_tokens: int | None = Field(default=None, ge=1)
    openai_timeout_seconds: float = Field(default=60.0, gt=0)
    openai_max_retries: int = Field(default=2, ge=0, le=10)
    openai_stream_usage: bool = True

    # Titles written by the model (README, "Titles"). None: on with the openai provider, off
    # with the offline ones (which have no model to ask); true with an offline provider is
    # refused below, rather than silently doing nothing.
    title_generation: bool | None = None
    # None: OPENAI_MODEL.
    title_model: str | None = None
    # None: the prompt shipped in app/titles/prompt.txt.
    title_prompt_file: Path | None = None
    title_timeout_seconds: float = Field(default=15.0, gt=0)

    shutdown_grace_seconds: float = Field(default=30.0, ge=0)
    # The reply lifecycle (README): a reply's text is saved at most this often as it grows,
    # and a process that dies leaves its replies to be finished as interrupted by the others
    # once it has not reported (every PROCESS_HEARTBEAT_SECONDS) for PROCESS_STALE_SECONDS.
    reply_save_interval_ms: int = Field(default=500, ge=0)
    process_heartbeat_seconds: float = Field(default=5.0, gt=0)
    process_stale_seconds: float = Field(default=30.0, gt=0)
    # Messages between processes about replies (app/replies/relay.py): Redis pub/sub when
    # REDIS_URL is set, else PostgreSQL's LISTEN/NOTIFY; none on SQLite.
    reply_bus: Literal["auto", "postgres", "redis", "off"] = "auto"
    reply_stop_wait_seconds: float = Field(default=10.0, gt=0)
    # How long an `Idempotency-Key` is remembered (app/idempotency/keys.py): a request sent
    # again later stores its message again.
    idempotency_key_ttl_hours: int = Field(default=24, ge=1, le=24 * 365)

    # Authentication: on when a verification key is configured (a secret, a JWKS URL, or both).
    auth_jwt_secret: SecretStr | None = None
    auth_jwks_url: str | None = None
    auth_audience: str = "authenticated"
    auth_issuer: str | None = None
    auth_jwks_cache_seconds: int = Field(default=300, ge=0)
    open_mode_allow_network: bool = False
    # Host names requests may be addressed to besides loopback ones ("*": any); see
    # app/kit/http/host_check.py for the default of each mode.
    allowed_hosts: CommaSeparated = Field(default_factory=list)

    max_request_body_bytes: int = Field(default=512 * 1024, ge=1024)
    # POST /api/v1/chat/import only (instead of MAX_REQUEST_BODY_BYTES): the upload, and the
    # conversations.json inside a zip. Read as a stream: memory does not grow with it.
    import_max_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)
    # The request line and headers: a bearer token is about 1 KiB; browsers send a few KiB.
    max_request_header_bytes: int = Field(default=64 * 1024, ge=1024)
    # None: on in authenticated mode, off in open mode.
    rate_limit_enabled: bool | None = None
    rate_limit_messages: str = "30/minute;500/hour"
    redis_url: str | None = None
    rate_limit_redis_retry_seconds: float = Field(default=10.0, gt=0)

    # Reads of shared links (GET /api/v1/shared/{share_id}, no sign-in) per client address;
    # limited whenever RATE_LIMIT_ENABLED's rule turns limits on.
    shared_rate_limit: str = "60/minute"

    cors_allow_origins: CommaSeparated = Field(default_factory=list)

    web_ui_enabled: bool = True

    # Read-only share links (README, Share links). Off: every share route answers 404.
    sharing_enabled: bool = True
    # Where users reach this service (e.g. https://chat.example.com): share links are
    # absolute URLs under it; unset, they are paths (/s/{share_id}).
    public_base_url: str | None = None

    @model_validator(mode="after")
    def _read_replica_of_the_same_kind(self) -> "Settings":
        # A replica serves the same statements: PostgreSQL's search is not SQLite's.
        if self.database_read_url and make_url(self.database_read_url).get_backend_name() != (
            make_url(self.database_url).get_backend_name()
        ):
            raise ValueError("DATABASE_READ_URL must be the same kind of database as DATABASE_URL")
        return self

    @model_validator(mode="after")
    def _stale_after_heartbeats(self) -> "Settings":
        # A process that reports on time must never look dead.
        if self.process_stale_seconds <= 2 * self.process_heartbeat_seconds:
            raise ValueError(
                "PROCESS_STALE_SECONDS must be more than twice PROCESS_HEARTBEAT_SECONDS"
            )
        return self

    @model_validator(mode="after")
    def _titles_need_a_model(self) -> "Settings":
        if self.title_generation and self.assistant_provider != "openai":
            raise ValueError(
                "TITLE_GENERATION=true needs ASSISTANT_PROVIDER=openai: the "
                f"{self.assistant_provider} assistant has no model to write titles"
            )
        return self

    @field_validator("database_url", "database_read_url")
    @classmethod
    def _normalize_database_url(cls, value: str) -> str:
        return normalize_database_url(value) if value else value

    @field_validator(
        "auth_jwt_secret",
        "auth_jwks_url",
        "auth_issuer",
        "redis_url",
        "openai_base_url",
        "openai_api_key",
        "public_base_url",
        "title_model",
        "title_prompt_file",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("public_base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().rstrip("/")
        if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
            raise ValueError("must be an http(s) URL without query or fragment")
        return value

    @field_validator("shared_rate_limit")
    @classmethod
    def _rates(cls, value: str) -> str:
        try:
            parse_many(value)
        except ValueError as exc:
            raise ValueError(f"not a rate limit ({exc})") from None
        return value

    @field_validator("cors_allow_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list):
            names = (str(name).strip().lower().removesuffix(".") for name in value)
            return [name for name in names if name]
        return value

    @property
    def auth_enabled(self) -> bool:
        return self.auth_jwt_secret is not None or self.auth_jwks_url is not None

    @property
    def titles_enabled(self) -> bool:
        """Whether the model writes session titles."""
        if self.title_generation is None:
            return self.assistant_provider == "openai"
        return self.title_generation

    @property
    def title_model_name(self) -> str:
        return self.title_model or self.openai_model

    @property
    def title_prompt_path(self) -> Path:
        return self.title_prompt_file or PROJECT_ROOT / "app" / "titles" / "prompt.txt"

    @property
    def rate_limit_active(self) -> bool:
        if self.rate_limit_enabled is None:
            return self.auth_enabled
        return self.rate_limit_enabled

    @property
    def binds_loopback_only(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def describe_invalid_settings(exc: ValidationError) -> str:
    """One line naming each invalid setting and why, without the values (they may be
    secrets: a DATABASE_URL holds a password)."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        name = "_".join(str(part) for part in error["loc"]).upper() or "settings"
        cause = error.get("ctx", {}).get("error")
        reason = str(cause) if isinstance(cause, ValueError) else error["msg"]
        problems.append(f"{name}: {reason}")
    return "invalid setting " + "; ".join(problems)


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
