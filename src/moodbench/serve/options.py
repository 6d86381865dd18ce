"""The options of `moodbench serve`, shared by every backend so the CLI stays one command."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ServeOptions:
    backend: str  # "llamacpp" | "vllm"
    model: str | None = None
    host: str = "127.0.0.1"
    port: int | None = None  # backend default when None (llamacpp 8080, vllm 8000)
    # llama.cpp
    ctx: int = 16384
    threads: int | None = None
    parallel: int = 4
    # vLLM
    tensor_parallel: int = 1
    replicas: int = 1
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    tool_call_parser: str | None = None
    reasoning_parser: str | None = None
    reuse: bool = False
    dry_run: bool = False
    stop: bool = False
    startup_timeout: float = 900.0
    log_dir: Path | None = None
    extra_args: list[str] = field(default_factory=list)
    # SkyPilot
    skypilot: Path | None = None
    gpus: str = "H100:1"
    cloud: str | None = None
