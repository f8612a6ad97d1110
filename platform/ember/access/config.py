"""`AccessConfig`: the `access:` section of a Serve app's args (keys and limits)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RequestLimits(_Strict):
    """Per-request ceilings; a request above one gets a 400 (413 for the body) naming it."""

    max_body_mb: float = Field(1.0, gt=0, description="request body size (413 above)")
    max_n: int = Field(8, ge=1, description="completions per request (`n`)")
    max_tokens: int = Field(4096, ge=1, description="`max_tokens` / `max_completion_tokens`")
    max_embedding_inputs: int = Field(256, ge=1, description="inputs per embeddings request")


class AccessConfig(_Strict):
    auth: bool = Field(True, description="require `Authorization: Bearer <key>` on every "
                                         "route but /health")
    database_url: str | None = Field(None, description="SQLAlchemy URL of the keys and usage "
                                     "database; default: EMBER_ACCESS_DATABASE_URL, else "
                                     "SQLite under $EMBER_HOME/access")
    key_cache_s: float = Field(2.0, ge=0, description="how long a replica trusts a key lookup "
                               "(a revocation takes effect within this)")
    failed_auth_per_minute: int | None = Field(
        20, ge=1, description="a client address that sends this many requests with a "
                              "missing or invalid key within a minute gets 429 until the "
                              "minute ends (per replica); null: never")
    client_address_header: str | None = Field(
        None, description="a header in which a load balancer in front passes the client's "
                          "address (e.g. x-forwarded-for; its last entry is taken), for "
                          "failed-auth throttling; null: the connection's address (behind "
                          "Serve's HAProxy ingress that is HAProxy's, so throttling is off)")
    limits: RequestLimits = Field(default_factory=RequestLimits, description="per-request "
                                  "ceilings: 400 above one, naming it (413 for the body)")
    cost_sample_s: float = Field(10.0, gt=0, description="how often replicas are counted for "
                                 "cost accounting (each model's `usd_per_hour`)")
    usage_buffer_rows: int = Field(100_000, ge=1, description="usage rows a replica keeps "
                                   "while the usage keeper is away; past this the oldest are "
                                   "dropped and counted (`ember_usage_rows_dropped`)")
    keeper_replace_after_s: float = Field(30.0, gt=0, description="a usage keeper that has not "
                                          "answered for this long (stuck restarting, say) is "
                                          "killed and started anew")

    def url(self) -> str:
        """The config's URL, else EMBER_ACCESS_DATABASE_URL (a Kubernetes Secret, say),
        else SQLite under $EMBER_HOME/access."""
        from ember.access.store import default_url

        return self.database_url or default_url()
