"""`batch:` in the service config: the Batch API's limits and its engine's share."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class BatchServiceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="serve /v1/files, /v1/batches and /v1/batch")
    files_dir: str | None = Field(None, description="where uploaded and result files live "
                                                    "(every node must see it); default: "
                                                    "$EMBER_HOME/batches")
    max_file_mb: float = Field(100, gt=0, description="larger uploads answer 413 (this, not "
                                                      "access.limits.max_body_mb, applies "
                                                      "on /v1/files)")
    max_lines: int = Field(50_000, ge=1, description="a batch with more requests answers 400")
    max_running: int = Field(1, ge=1, description="batches run at once; later ones wait "
                                                  "(in `validating`)")
    # The batch engine is a separate vLLM engine (Ray Data LLM) beside the online
    # replicas: these are its share of the cluster.
    num_cpus: float = Field(1, ge=0, description="logical CPUs of the batch engine")
    num_gpus: float = Field(0, ge=0, description="GPUs of the batch engine")
    kv_cache_gib: int = Field(2, ge=1, description="its KV cache on CPU")
    nice: int = Field(10, ge=0, le=19, description="its processes' OS priority (nice): "
                                                   "online requests go first on shared cores")
    batch_size: int = Field(32, ge=1, description="requests per Ray Data batch to the engine")
    # The watchdog: a batch engine that died or hangs must not leave its batch
    # in_progress for ever (Ray Data would wait on it). The first result waits for the
    # engine's start (model load, on GPUs minutes), later ones for at most one block.
    start_timeout_s: float = Field(1800, gt=0, description="a batch with no result this long "
                                                           "after its runner started fails "
                                                           "(its finished lines kept)")
    stall_timeout_s: float = Field(600, gt=0, description="a running batch with no new result "
                                                          "for this long fails (the engine "
                                                          "died or hangs); its finished "
                                                          "lines are kept")
    sync_max_requests: int = Field(64, ge=1, description="POST /v1/batch: more answer 413")
    sync_concurrency: int = Field(8, ge=1, description="POST /v1/batch: requests in flight "
                                                       "at once on the online engine")
