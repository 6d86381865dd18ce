"""``moodbench serve --backend vllm --skypilot FILE``: the same vLLM servers on a rented GPU.

Writes a SkyPilot task YAML::

    name: moodbench-vllm
    resources: {accelerators: H100:1, ports: [8000], infra: aws}   # infra only with --cloud
    secrets: {HF_TOKEN: null}
    setup: pip install vllm
    run: vllm serve MODEL --host 0.0.0.0 --port 8000 --enable-auto-tool-choice ...

``HF_TOKEN`` is declared in ``secrets:`` with a null value: SkyPilot (>= 0.10) then takes the
value at launch time from ``sky launch --secret HF_TOKEN``, which reads the caller's
environment by name, and redacts it in its logs and dashboards. The token's value is never
written to the file nor put on a command line. (``envs: {HF_TOKEN: null}`` would not do:
SkyPilot 0.14 refuses to load a task whose env var is null unless ``--env`` gives it.)
``--cloud`` goes to ``resources.infra`` (``aws``, ``gcp/us-central1``, ``k8s``...), the
current spelling of the deprecated ``resources.cloud``.

When the ``sky`` CLI is on PATH the task is launched (``sky launch -c CLUSTER FILE --secret
HF_TOKEN -d``, SkyPilot asks for confirmation and shows the price), the endpoint is looked up
with ``sky status --endpoint PORT CLUSTER``, waited for, and printed with the ``moodbench
run`` line; the cluster keeps running until ``sky down CLUSTER``. Without ``sky`` the file is
written and the command to run is printed. ``--dry-run`` prints the YAML and the command
and writes nothing.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import subprocess
from pathlib import Path

import yaml

from .options import ServeOptions
from .vllm import LaunchSpec, ServeConfigError, build_vllm_commands

DEFAULT_CLUSTER = "moodbench-vllm"


def secret_names(environ=None) -> list[str]:
    """Secrets the task declares (null values, passed by name with ``--secret``): always
    HF_TOKEN; VLLM_API_KEY too when it is set here, so the open port needs that key (vLLM
    reads ``VLLM_API_KEY`` like ``--api-key``)."""
    environ = os.environ if environ is None else environ
    return ["HF_TOKEN"] + (["VLLM_API_KEY"] if environ.get("VLLM_API_KEY") else [])


def gpu_count(gpus: str) -> float:
    """``"H100:4"`` -> 4, ``"A100-80GB"`` -> 1, ``"{H100:8, A100:8}"``-style sets -> their minimum."""
    counts = [float(c) for c in re.findall(r":\s*([0-9]*\.?[0-9]+)", gpus)]
    return min(counts) if counts else 1.0


def remote_specs(opts: ServeOptions) -> list[LaunchSpec]:
    """The vLLM commands as they run on the cluster: all interfaces, the plain ``vllm``
    executable, GPU slices counted from 0 (nothing from this machine's environment)."""
    if any(arg.split("=", 1)[0] == "--api-key" for arg in opts.extra_args or []):
        raise ServeConfigError(
            "--api-key after `--` would be written into the SkyPilot YAML in clear; export "
            "VLLM_API_KEY instead (it is passed to the cluster as a secret, by name)."
        )
    # the rented VM is reached through SkyPilot's endpoint, so its server listens on all interfaces
    remote = dataclasses.replace(opts, host="0.0.0.0", log_dir=Path("~/moodbench-logs"))  # noqa: S104
    return build_vllm_commands(remote, environ={})


def run_script(specs: list[LaunchSpec]) -> str:
    if len(specs) == 1:
        return specs[0].display() + "\n"
    lines = ["# one vLLM server per GPU slice; stop all when one dies"]
    for s in specs:
        lines.append(f"{s.display()} &")
    lines.append("wait -n")
    lines.append("exit $?")
    return "\n".join(lines) + "\n"


def task_config(opts: ServeOptions) -> dict:
    specs = remote_specs(opts)
    need = len(specs) * max(1, int(opts.tensor_parallel or 1))
    if gpu_count(opts.gpus) < need:
        raise ServeConfigError(
            f"--gpus {opts.gpus} has fewer GPUs than --replicas {len(specs)} x --tensor-parallel "
            f"{opts.tensor_parallel} = {need}; ask for e.g. --gpus H100:{need}."
        )
    resources: dict = {"accelerators": opts.gpus, "ports": [s.port for s in specs]}
    if opts.cloud:
        resources["infra"] = opts.cloud
    return {
        "name": DEFAULT_CLUSTER,
        "resources": resources,
        # null: the value comes from `sky launch --secret HF_TOKEN` (the caller's environment)
        "secrets": {name: None for name in secret_names()},
        "setup": "pip install vllm\n",
        "run": run_script(specs),
    }


class _Dumper(yaml.SafeDumper):
    pass


def _str_representer(dumper, data: str):
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_representer)


def render_task_yaml(opts: ServeOptions, cluster: str = DEFAULT_CLUSTER, path: str = "TASK.yaml") -> str:
    cfg = task_config(opts)
    cfg["name"] = cluster
    header = (
        f"# SkyPilot task written by `moodbench serve --backend vllm --skypilot`.\n"
        f"# Launch:  {shlex.join(sky_launch_argv(path, cluster))}\n"
        f"# Secrets ({', '.join(secret_names())}) are read from your environment by name at\n"
        f"# launch (--secret NAME); their values are never stored here. Stop: sky down {cluster}\n"
    )
    return header + yaml.dump(cfg, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def sky_launch_argv(path: str | os.PathLike, cluster: str = DEFAULT_CLUSTER) -> list[str]:
    argv = ["sky", "launch", "-c", cluster, str(path)]
    for name in secret_names():
        argv += ["--secret", name]  # by name: sky reads the value from its own environment
    argv.append("-d")  # detach from the (never-ending) run section once it has started
    return argv


def cluster_name() -> str:
    return os.environ.get("MOODBENCH_SKY_CLUSTER") or DEFAULT_CLUSTER


def endpoint(cluster: str, port: int) -> str | None:
    try:
        out = subprocess.run(
            ["sky", "status", "--endpoint", str(port), cluster], capture_output=True, text=True, timeout=120, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    if out.returncode != 0 or not lines:
        return None
    endpoint = lines[-1]
    if not endpoint.startswith(("http://", "https://")):
        endpoint = "http://" + endpoint
    return endpoint.rstrip("/") + "/v1"
