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
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from moodbench._util import defaults
from moodbench._util.bounds import BoundError, check_tree, load_yaml
from moodbench._util.defaults import UserFormat
from moodbench._util.diff import dict_diff
from moodbench._util.errors import UsageError
from moodbench._util.files import read_user_text
from moodbench._util.secrets import redact_url, secret_keys


class ConfigError(UsageError):
    """A configuration problem the user must fix; the message says what and how."""


def opt(
    default: Any = None,
    help: str = "",
    *,
    flag: str | None = None,
    execution: bool = False,
    repeatable: bool = False,
    **constraints: Any,
) -> Any:
    """A RunConfig field with its command-line face: ``flag`` (default: ``--field-name``) and ``help``.

    The ``moodbench run`` options are generated from these fields, so a field's name, default and
    help exist in one place. ``execution``: the field changes how a run executes, not what it
    measures, so changing it on resume is allowed (it is not part of the run's identity).
    ``repeatable``: a list field whose flag is given once per value (``--plugin a --plugin b``).
    """
    extra: dict[str, Any] = {"flag": flag, "execution": execution, "repeatable": repeatable}
    if callable(default) and not isinstance(default, type):
        return Field(default_factory=default, description=help, json_schema_extra=extra, **constraints)
    if default in (list, dict):
        return Field(default_factory=default, description=help, json_schema_extra=extra, **constraints)
    return Field(default=default, description=help, json_schema_extra=extra, **constraints)


def _file_digest(path: Path) -> str:
    """A variants file's identity is its content, so an edited persona is a different experiment
    and the same file reached by another path (or from another directory) is the same one."""
    try:
        return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return str(path)


def _url_problem(url: str) -> str | None:
    """Why ``url`` cannot be an OpenAI-compatible base URL (None: it can)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        return str(exc)
    if parts.scheme not in ("http", "https"):
        return "it must start with http:// or https://"
    if not parts.hostname:
        return "it names no host"
    return None


def _split_list(value: Any) -> Any:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


class RunConfig(BaseModel):
    """Everything that defines an experiment (and a few knobs that only change how it runs)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # what to run
    domains: list[str] = opt(
        lambda: ["mock"], "tau2 domain(s), comma-separated: mock, retail, airline, telecom.", flag="--domain"
    )
    task_ids: list[str] | None = opt(None, "tau2 task ids, comma-separated (e.g. 0,1,5).")
    num_tasks: int | None = opt(None, "The first N tasks of each domain.", ge=1)
    task_split: str | None = opt(None, "tau2 task split name (e.g. test, base).")
    variants: list[str] = opt(
        lambda: ["control", "frustration"],
        "Variant specs, comma-separated: control,frustration,anger:severe,anxiety:mild+confusion.",
    )
    variants_file: list[Path] = opt(list, "YAML file with your own variants (repeatable).")
    trials: int = opt(1, "Trials per task and variant (pass^k needs k <= trials).", ge=1, le=defaults.MAX_TRIALS)
    max_steps: int = opt(defaults.MAX_STEPS, "tau2 max steps per conversation.", ge=1, le=100_000)
    max_errors: int = opt(defaults.MAX_ERRORS, "tau2 max tool errors per conversation.", ge=1, le=100_000)
    seed: int = opt(
        defaults.SEED, "Base seed; each task/trial gets a seed shared by all its variants.", ge=0, le=defaults.MAX_SEED
    )
    shard: str | None = opt(None, "I/N: run only shard I of N (1-based); combine shards with `moodbench merge`.")

    # models
    agent_model: str = opt(
        ...,
        "litellm model string: openai/NAME, hosted_vllm/NAME, anthropic/NAME, ollama_chat/NAME, "
        "or local/qwen2.5-0.5b (embedded llama.cpp).",
    )
    agent_base_url: list[str] = opt(list, "OpenAI-compatible base URL(s), comma-separated replicas.")
    user_model: str | None = opt(None, "Simulated customer's model (default: the agent's).")
    user_base_url: list[str] | None = opt(None, "Base URL(s) of the customer's model.")
    judge_model: str | None = opt(None, "Model for NL assertions and judge checks (default: the agent's).")
    judge_base_url: list[str] | None = opt(None, "Base URL(s) of the judge's model.")
    agent_args: dict[str, Any] = opt(dict, "JSON of extra request parameters, e.g. '{\"temperature\": 0}'.")
    user_args: dict[str, Any] = opt(dict, "JSON of extra request parameters for the customer's model.")
    judge_args: dict[str, Any] = opt(dict, "JSON of extra request parameters for the judge's model.")
    api_key_env: str | None = opt(
        None,
        "Name of the environment variable holding the agent's API key (never the key "
        "itself); also sent to the customer and judge when they use the agent's endpoint.",
    )
    user_api_key_env: str | None = opt(
        None,
        "Variable holding the key for the customer's own endpoint (--user-base-url or "
        "another provider); the agent's key never goes there.",
        execution=True,
    )
    judge_api_key_env: str | None = opt(
        None,
        "Variable holding the key for the judge's own endpoint (--judge-base-url or "
        "another provider); the agent's key never goes there.",
        execution=True,
    )
    max_tokens: int = opt(defaults.MAX_TOKENS, "max_tokens per reply, so server defaults never truncate.", ge=1, le=10_000_000)

    # agent and user behaviour
    tool_choice: Literal["auto", "required"] = opt(
        "auto",
        "auto, or required: an ablation where the agent must call a "
        "tool every turn and speaks only through a respond_to_user tool.",
    )
    recover_text_tool_calls: bool | None = opt(
        None, "Turn tool calls written as text into real calls (default: on for local models, off otherwise)."
    )
    user_format: UserFormat = opt(
        None,
        "How the customer model sees the conversation: tau2 (tau2's role-flipped chat), transcript (one chat message "
        "holding the conversation) or completion (a transcript continued through /v1/completions; keeps small models "
        "in the customer role). Default: completion for local/ customer models, tau2 otherwise.",
    )
    agent: str | None = opt(
        None,
        "The agent under test: a tau2 agent class as package.module:Class, or a name in tau2's "
        "registry (tau2's llm_agent, or one a --plugin registers). Default: moodbench's own agent "
        "(tau2's LLMAgent calling the agent model through moodbench's model layer).",
    )
    plugins: list[str] = opt(
        list,
        "Python module to import before anything else (repeatable; e.g. mypkg.tau2_plugin): it "
        "may register tau2 agents, domains and task sets, usable as --agent and --domain.",
        flag="--plugin",
        repeatable=True,
    )
    judge_fidelity: bool = opt(
        False, "Ask the judge model to rate every simulated customer (in role? on goal? emotion at the intended level?)."
    )
    # group-sequential design (None defaults keep the identity of runs stored before these fields existed)
    sequential: bool | None = opt(
        None,
        "Run the tasks in stages (looks) and stop once every variant is decided: a claim, or an interval that rules "
        "out --smallest-effect (Lan-DeMets alpha spending; plan it with moodbench power --sequential).",
    )
    looks: int | None = opt(None, "With --sequential: number of looks, stages of tasks (default 4).", ge=2, le=20)
    smallest_effect: float | None = opt(
        None, "With --sequential: smallest drop in mean reward that matters (futility); default the planned MDE.", gt=0, le=1
    )
    looks_from: Path | None = opt(
        None,
        "With --sequential --shard I/N: the run merged from every shard so far (moodbench merge); its looks decide the "
        "stage and the variants this shard runs next.",
        execution=True,
    )

    # execution only (not part of the experiment's identity)
    concurrency: int = opt(defaults.CONCURRENCY, "Conversations in flight at once.", execution=True, ge=1, le=4096)
    executor: Literal["auto", "thread", "process", "ray"] = opt(
        "auto",
        "Where conversations run: thread (one process), process (worker processes: all cores), ray "
        "(a Ray cluster), or auto (process when the run keeps >= 16 conversations in flight on >= 2 cores, "
        "else thread).",
        execution=True,
    )
    ray_address: str | None = opt(
        None,
        "Ray cluster to join with --executor ray (e.g. 10.0.0.1:6379, or auto); default: a private local instance.",
        execution=True,
    )
    workers: int | None = opt(
        None,
        "Worker processes of the process and ray executors (default: four per core for process, at most one per 8 "
        "conversations in flight; one per CPU for ray).",
        execution=True,
        ge=1,
        le=1024,
    )
    max_concurrency_per_endpoint: int | None = opt(
        None,
        "At most this many requests in flight per base URL (replica); requests go to the least busy replica.",
        execution=True,
        ge=1,
    )
    timeout_s: float = opt(
        defaults.TIMEOUT_S, "Deadline per model request in seconds.", flag="--timeout", execution=True, gt=0, le=86_400
    )
    max_response_bytes: int = opt(
        defaults.MAX_RESPONSE_BYTES,
        "A model reply larger than this many bytes ends the request as an error without reading the rest.",
        execution=True,
        ge=1024,
        le=2**31,
    )
    max_retries: int = opt(defaults.MAX_RETRIES, "Retries per model call on 429/5xx/timeouts.", execution=True, ge=0, le=1000)
    max_consecutive_failures: int = opt(
        defaults.MAX_CONSECUTIVE_FAILURES,
        "Stop starting conversations after this many failed requests in a row.",
        execution=True,
        ge=0,
        le=10**9,
    )
    stop_grace_s: float = opt(
        defaults.STOP_GRACE_S,
        "After Ctrl-C or SIGTERM, running conversations get this long to finish before they are abandoned (re-run on resume).",
        flag="--stop-grace",
        execution=True,
        ge=0,
        le=86_400,
    )
    skip_preflight: bool = opt(
        False,
        "Skip the endpoint and tool-calling checks before the first conversation.",
        flag="--skip-preflight/--preflight",
        execution=True,
    )
    out: Path = opt(Path("runs/latest"), "Run directory (results.sqlite, manifest, events, summary).", execution=True)

    @field_validator("domains", "variants", "agent_base_url", "user_base_url", "judge_base_url", "variants_file", mode="before")
    @classmethod
    def _lists(cls, v: Any) -> Any:
        return _split_list(v)

    @field_validator("plugins", mode="before")
    @classmethod
    def _plugin_list(cls, v: Any) -> Any:
        if isinstance(v, (list, tuple)):  # --plugin a --plugin b,c
            return [p for item in v for p in (_split_list(item) if isinstance(item, str) else [item])]
        return _split_list(v)

    @field_validator("agent")
    @classmethod
    def _agent(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("--agent is empty; give package.module:Class or a registered agent name (or leave it out)")
        return v.strip() if v else v

    @field_validator("agent_base_url", "user_base_url", "judge_base_url")
    @classmethod
    def _urls(cls, v: list[str] | None) -> list[str] | None:
        for url in v or []:
            problem = _url_problem(url)
            if problem:
                raise ValueError(f"{redact_url(url)!r} is not a usable base URL ({problem}); example: http://127.0.0.1:8000/v1")
        return v

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
            except RecursionError:  # thousands of levels: json gives up before any check of ours
                raise ValueError("JSON nested too deep; request parameters are a few levels deep at most") from None
        if isinstance(v, dict):
            try:
                check_tree(v, "the request parameters")
            except BoundError as exc:
                raise ValueError(str(exc)) from None
            secret = secret_keys(v)
            if secret:
                key = secret[0].rsplit(".", 1)[-1].split("[")[0]
                where = f" (at {secret[0]})" if secret[0] != key else ""
                raise ValueError(
                    f"{key!r} looks like a secret{where}; secrets are read from environment variables only "
                    "(use --api-key-env NAME; an endpoint that needs a header gets it from a server-side proxy)"
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

    @model_validator(mode="before")
    @classmethod
    def _default_user_format(cls, data: Any) -> Any:
        """The customer format a run gets when none is named: ``completion`` for an embedded local
        customer model (measured: it keeps small models in the customer role, see README), else
        tau2's own. Resolved here, so the stored experiment names the format it really used."""
        if isinstance(data, dict) and data.get("user_format") is None:
            customer = data.get("user_model") or data.get("agent_model") or ""
            data = {**data, "user_format": "completion" if str(customer).startswith("local/") else "tau2"}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        for name, flag in (("domains", "--domain"), ("variants", "--variants"), ("task_ids", "--task-ids")):
            if getattr(self, name) == []:  # "--variants ''" would otherwise store a config and run nothing
                raise ValueError(f"{flag} is empty; name at least one (or leave the option out for the default)")
        if self.task_ids is not None and self.num_tasks is not None:
            raise ValueError("give either task_ids or num_tasks, not both")
        if self.task_ids is not None and len(self.domains) > 1:
            raise ValueError("task_ids name tasks of one domain; run one domain at a time, or use num_tasks")
        if not self.sequential and (self.looks is not None or self.smallest_effect is not None):
            raise ValueError("--looks and --smallest-effect plan a sequential run; add --sequential")
        if self.looks_from is not None and not (self.sequential and self.shard):
            raise ValueError(
                "--looks-from tells a shard of a sequential run where the merged looks are; add --sequential --shard I/N"
            )
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
        return self.judge_model, list(
            self.judge_base_url or ([] if self.judge_model != self.agent_model else self.agent_base_url)
        )

    def key_env(self, role: str) -> str | None:
        """The variable whose key goes to ``role``'s endpoint: the agent gets ``api_key_env``; the customer and
        judge get their own variable, else the agent's only when they talk to the agent's endpoint (the same
        origins, or no base URL and the same provider): a key reaches only the servers it was named for."""
        if role == "agent":
            return self.api_key_env
        own = self.user_api_key_env if role == "user" else self.judge_api_key_env
        if own:
            return own
        model, urls = self.resolved_user_model() if role == "user" else self.resolved_judge_model()
        return self.api_key_env if _same_endpoint(self.agent_model, list(self.agent_base_url), model, urls) else None

    def identity(self) -> dict[str, Any]:
        """The fields that make two runs the same experiment (used to refuse a changed config)."""
        data = json.loads(self.model_dump_json())
        data["variants_file"] = [_file_digest(p) for p in self.variants_file]
        if not data.get("plugins"):  # runs stored before --plugin existed are the same experiment
            data.pop("plugins", None)
        for key in ("agent_base_url", "user_base_url", "judge_base_url"):  # credentials in a URL never reach disk
            if data.get(key):
                data[key] = [redact_url(u) for u in data[key]]
        return {k: v for k, v in data.items() if not is_execution_field(k)}

    def execution(self) -> dict[str, Any]:
        """The fields that only change how the run executes."""
        data = json.loads(self.model_dump_json())
        return {k: v for k, v in data.items() if is_execution_field(k)}


def field_cli(name: str) -> dict[str, Any]:
    """A field's command-line metadata: ``flag`` (or None for ``--field-name``) and ``execution``."""
    extra = RunConfig.model_fields[name].json_schema_extra
    return extra if isinstance(extra, dict) else {}


def is_execution_field(name: str) -> bool:
    return bool(field_cli(name).get("execution"))


def _normalise_keys(data: dict[str, Any]) -> dict[str, Any]:
    aliases = {"domain": "domains", "variant": "variants", "task_id": "task_ids", "plugin": "plugins"}
    out = {}
    for k, v in data.items():
        key = str(k).replace("-", "_")
        out[aliases.get(key, key)] = v
    return out


def read_text_file(path: Path, what: str) -> str:
    return read_user_text(path, what, ConfigError)


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML or YAML config file into a dict of RunConfig keys (unchecked)."""
    text = read_text_file(path, "config file")
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
            check_tree(data, f"config file {path}")
        else:
            data = load_yaml(text, f"config file {path}")  # duplicate keys and alias bombs refused
    except (tomllib.TOMLDecodeError, yaml.YAMLError, BoundError, RecursionError) as exc:
        raise ConfigError(f"{path}: cannot parse: {exc}") from None
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
        raise ConfigError(
            "no agent model: pass --agent-model (e.g. openai/gpt-4o-mini, hosted_vllm/Qwen/Qwen2.5-7B-Instruct, local/qwen2.5-0.5b)"
        )
    try:
        return RunConfig(**merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "config"
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"invalid value for {loc!r}: {msg}") from None


config_diff = dict_diff  # the lines ``moodbench run`` shows when a run directory holds another experiment


def _same_endpoint(agent_model: str, agent_urls: list[str], model: str, urls: list[str]) -> bool:
    def origin(url: str) -> tuple[str, str]:
        try:
            parts = urlsplit(url)
            return parts.scheme.lower(), (parts.hostname or "") + f":{parts.port or ''}"
        except ValueError:
            return url, ""

    if urls or agent_urls:
        return bool(urls) and {origin(u) for u in urls} <= {origin(u) for u in agent_urls}
    return model.split("/", 1)[0] == agent_model.split("/", 1)[0]
