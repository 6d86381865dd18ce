"""Run configuration: one pydantic model shared by ``--config FILE`` (TOML/YAML) and the CLI flags.

Unknown keys are errors that name the key and suggest the closest valid one, because a typo that
silently falls back to a default (``trails: 5``) wastes a whole experiment.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A configuration problem the user must fix; the message says what and how."""


# Keys whose change makes an existing run directory a different experiment.
_EXECUTION_ONLY = {"concurrency", "out", "progress", "force_config", "skip_preflight", "max_consecutive_failures",
                   "timeout_s", "max_retries", "executor", "ray_address", "max_concurrency_per_endpoint"}


# "token" only as a whole key or a credential-like suffix (auth_token, hf_token, AuthToken): request
# parameters such as max_tokens, stop_token_ids or skip_special_tokens are not secrets.
_SECRET_KEY = re.compile(
    r"api[_-]?key|secret|password|passwd|authorization|credential|(?:^|[_-]|auth|access|bearer|refresh|session)token$",
    re.I,
)


def _secret_keys(value: Any) -> list[str]:
    """Keys that look like credentials, at any depth: ``extra_headers: {Authorization: ...}`` is one too.

    Request arguments are stored in the run's config and manifest, so a key in them would be written
    to disk and shared with the results.
    """
    found: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if _SECRET_KEY.search(str(k)):
                found.append(str(k))
            found += _secret_keys(v)
    elif isinstance(value, list):
        for item in value:
            found += _secret_keys(item)
    return found


def _file_digest(path: Path) -> str:
    """A variants file's identity is its content, so an edited persona is a different experiment
    and the same file reached by another path (or from another directory) is the same one."""
    try:
        return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return str(path)


def _split_list(value: Any) -> Any:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


class RunConfig(BaseModel):
    """Everything that defines an experiment (and a few knobs that only change how it runs)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # what to run
    domains: list[str] = Field(default_factory=lambda: ["mock"])
    task_ids: list[str] | None = None
    num_tasks: int | None = Field(default=None, ge=1)
    task_split: str | None = None
    variants: list[str] = Field(default_factory=lambda: ["control", "frustration"])
    variants_file: list[Path] = Field(default_factory=list)
    trials: int = Field(default=1, ge=1)
    max_steps: int = Field(default=100, ge=1)
    max_errors: int = Field(default=10, ge=1)
    seed: int = 300
    shard: str | None = None

    # models
    agent_model: str
    agent_base_url: list[str] = Field(default_factory=list)
    user_model: str | None = None
    user_base_url: list[str] | None = None
    judge_model: str | None = None
    judge_base_url: list[str] | None = None
    agent_args: dict[str, Any] = Field(default_factory=dict)
    user_args: dict[str, Any] = Field(default_factory=dict)
    judge_args: dict[str, Any] = Field(default_factory=dict)
    api_key_env: str | None = None
    max_tokens: int = Field(default=2048, ge=1)

    # agent and user behaviour
    tool_choice: Literal["auto", "required"] = "auto"
    recover_text_tool_calls: bool | None = None  # None: on for local models, off otherwise
    user_format: Literal["tau2", "transcript"] = "tau2"
    judge_fidelity: bool = False  # ask the judge model to rate each simulated customer (stored per conversation)

    # execution only (not part of the experiment's identity)
    concurrency: int = Field(default=4, ge=1, le=4096)
    # thread: one process (fine for slow endpoints); process: worker processes on this machine, past
    # the GIL; ray: Ray tasks on a cluster (--ray-address, or a private local instance)
    executor: Literal["thread", "process", "ray"] = "thread"
    ray_address: str | None = None
    # per model server (base URL): requests in flight at once; replicas are load-balanced either way
    max_concurrency_per_endpoint: int | None = Field(default=None, ge=1)
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=4, ge=0)
    max_consecutive_failures: int = Field(default=25, ge=0)
    skip_preflight: bool = False
    out: Path = Path("runs/latest")

    @field_validator("domains", "variants", "agent_base_url", "user_base_url", "judge_base_url", "variants_file", mode="before")
    @classmethod
    def _lists(cls, v: Any) -> Any:
        return _split_list(v)

    @field_validator("task_ids", mode="before")
    @classmethod
    def _task_ids(cls, v: Any) -> Any:
        if isinstance(v, (int, float)):
            return [str(int(v))]
        v = _split_list(v)
        return [str(x) for x in v] if isinstance(v, list) else v

    @field_validator("agent_args", "user_args", "judge_args", mode="before")
    @classmethod
    def _json_args(cls, v: Any) -> Any:
        if isinstance(v, str):
            try:
                v = json.loads(v) if v.strip() else {}
            except json.JSONDecodeError as exc:
                raise ValueError(f"not valid JSON ({exc.msg}); example: '{{\"temperature\": 0.0}}'") from exc
        if isinstance(v, dict):
            secret = _secret_keys(v)
            if secret:
                raise ValueError(
                    f"{secret[0]!r} looks like a secret; secrets are read from environment variables only "
                    "(use --api-key-env NAME)"
                )
        return v

    @field_validator("shard")
    @classmethod
    def _shard(cls, v: str | None) -> str | None:
        if v is None:
            return v
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", v)
        if not m or not (1 <= int(m.group(1)) <= int(m.group(2))):
            raise ValueError("shard must be I/N with 1 <= I <= N, e.g. 1/4 (shards are numbered from 1)")
        return f"{int(m.group(1))}/{int(m.group(2))}"

    @model_validator(mode="after")
    def _consistent(self) -> "RunConfig":
        if self.task_ids is not None and self.num_tasks is not None:
            raise ValueError("give either task_ids or num_tasks, not both")
        if self.task_ids is not None and len(self.domains) > 1:
            raise ValueError("task_ids name tasks of one domain; run one domain at a time, or use num_tasks")
        return self

    # -- derived --------------------------------------------------------------------------------
    @property
    def shard_index(self) -> tuple[int, int] | None:
        if not self.shard:
            return None
        i, n = self.shard.split("/")
        return int(i), int(n)

    def resolved_user_model(self) -> tuple[str, list[str]]:
        if self.user_model is None:
            return self.agent_model, list(self.agent_base_url)
        return self.user_model, list(self.user_base_url or ([] if self.user_model != self.agent_model else self.agent_base_url))

    def resolved_judge_model(self) -> tuple[str, list[str]]:
        if self.judge_model is None:
            return self.agent_model, list(self.agent_base_url)
        return self.judge_model, list(self.judge_base_url or ([] if self.judge_model != self.agent_model else self.agent_base_url))

    def identity(self) -> dict[str, Any]:
        """The fields that make two runs the same experiment (used to refuse a changed config)."""
        data = json.loads(self.model_dump_json())
        data["variants_file"] = [_file_digest(p) for p in self.variants_file]
        return {k: v for k, v in data.items() if k not in _EXECUTION_ONLY}


def _normalise_keys(data: dict[str, Any]) -> dict[str, Any]:
    aliases = {"domain": "domains", "variant": "variants", "task_id": "task_ids"}
    out = {}
    for k, v in data.items():
        key = str(k).replace("-", "_")
        out[aliases.get(key, key)] = v
    return out


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML or YAML config file into a dict of RunConfig keys (unchecked)."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot parse: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    if "run" in data and isinstance(data["run"], dict) and len(data) == 1:
        data = data["run"]
    return _normalise_keys(data)


def build_config(file_values: dict[str, Any], overrides: dict[str, Any], origin: str = "config") -> RunConfig:
    """Merge file values with command-line overrides (which win) and validate."""
    merged = {**file_values, **{k: v for k, v in overrides.items() if v is not None}}
    valid = set(RunConfig.model_fields)
    for key in merged:
        if key not in valid:
            close = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(sorted(valid))}"
            raise ConfigError(f"unknown {origin} key {key!r}{hint}")
    if "agent_model" not in merged:
        raise ConfigError("no agent model: pass --agent-model (e.g. openai/gpt-4o-mini, hosted_vllm/Qwen/Qwen2.5-7B-Instruct, local/qwen2.5-0.5b)")
    try:
        return RunConfig(**merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "config"
        raise ConfigError(f"invalid value for {loc!r}: {err['msg']}") from None


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable lines for keys whose values differ."""
    lines = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            lines.append(f"  {key}: {json.dumps(old.get(key))} -> {json.dumps(new.get(key))}")
    return lines
