"""Installing the embedded local backend: llama.cpp's ``llama-server`` (and ``llama-cvector-generator``), built portably, cached.

Why a C++ binary and not the Python binding: llama.cpp's own ``llama-server`` accepts the standard
multi-turn tool conversation tau2 sends (assistant ``content: null`` + ``tool_calls``, ``tool`` results),
enforces ``tool_choice: "required"`` with a grammar, and keeps one KV cache per slot so the agent's and
the simulated customer's long prompts are each processed once. ``python -m llama_cpp.server`` rejects
those follow-up turns (HTTP 500) and ignores "required" (measured: see :mod:`moodbench.serve.llamacpp`'s docstring).

How: the llama.cpp sources vendored in the ``llama-cpp-python`` sdist on PyPI (a pinned release, so the
build is reproducible and reachable wherever PyPI is) are compiled with cmake, in ONE build with two
targets, into static ``llama-server`` and ``llama-cvector-generator`` binaries (the generator builds
contrastive control vectors for :mod:`moodbench.steer`; it shares every library with the server, so the
second target costs one more source file) and cached under ``<cache>/bin``, versioned; a second install
is a no-op, and a cache holding only the server (from before the generator was built) gets one combined
rebuild. The build is never ``-march=native``: that picked AMX on the project's build machine and segfaulted
on the first decode. It is one of two named instruction sets (:func:`build_variant`): ``avx2``
(``-DGGML_NATIVE=OFF``: SSE4.2/AVX/AVX2/FMA/F16C, runs on any x86-64 from 2013 on) or, on a CPU that has all
of them, ``avx512`` (AVX-512 F/CD/VL/DQ/BW/VBMI/VNNI/BF16 and AVX-VNNI, never AMX). Why the second: the
model's matrix products are compute-bound on CPU, and on the 2-core Xeon the calibration and the demo run
on, the AVX-512 build processed prompts 1.5-1.6x and decoded 1.1-1.2x as fast (one thread each, same
model, measured side by side). The variant is part of the cached binary's name, so a cache shared by
machines with different CPUs never hands one a binary it cannot run.

The build takes minutes on a laptop, so it shows progress: ninja's ``[n/m]`` (or make's ``[ xx%]``)
lines become a rich progress bar with an ETA on a terminal and a plain line every 10% elsewhere (CI
logs), while the full output still goes to ``<cache>/bin/llama-server-build.log``.

Optionally (``--with-python``) the ``llama-cpp-python`` wheel is built the same portable way
(``CMAKE_ARGS=-DGGML_NATIVE=OFF``, ``--no-cache-dir`` because pip otherwise reuses a cached native
wheel and ignores CMAKE_ARGS), kept in ``<cache>/wheels`` and installed into the running interpreter.

Command line: ``moodbench install-backend [--force] [--with-python] [--model NAME|--no-model] [--check]``
(``scripts/install-local-backend.sh`` wraps it; the command lives in :mod:`moodbench.cli._install`).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Self

from moodbench._util.cores import usable_cores
from moodbench._util.errors import UsageError
from moodbench.serve._sources import SourcesError, download_release_file, pip_index_configured
from moodbench.serve.models import (
    DEFAULT_MODEL,
    cache_root,
    resolve_model,
)

__all__ = [
    "LLAMA_CPP_PYTHON_VERSION",
    "BuildProgress",
    "LocalBackendMissing",
    "build_llama_server",
    "build_local_binaries",
    "build_variant",
    "cached_generator_binary",
    "cached_server_binary",
    "cvector_generator_path",
    "ensure_local_backend",
    "find_cvector_generator",
    "find_llama_server",
    "install_local_backend",
    "install_python_binding",
    "llama_server_path",
    "parse_build_progress",
]

#: The llama-cpp-python release whose vendored llama.cpp we build (also the optional Python binding).
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
#: sha256 of llama_cpp_python-0.3.36.tar.gz on PyPI (76,589,250 bytes).
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
SDIST_SIZE = 76_589_250

#: cmake flags for the portable server build. UI and OpenSSL are off: the server only binds localhost,
#: and LLAMA_USE_PREBUILT_UI would try to download the web UI at configure time.
CMAKE_FLAGS: tuple[str, ...] = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_CURL=OFF",
)

#: Extra cmake flags of each build variant (added to CMAKE_FLAGS), and the CPU flags (``/proc/cpuinfo``
#: names) a machine needs for it.
VARIANT_FLAGS: dict[str, tuple[str, ...]] = {
    "avx2": (),
    "avx512": ("-DGGML_AVX512=ON", "-DGGML_AVX512_VBMI=ON", "-DGGML_AVX512_VNNI=ON", "-DGGML_AVX512_BF16=ON",
               "-DGGML_AVX_VNNI=ON"),
}  # fmt: skip
AVX512_CPU_FLAGS = frozenset(
    {"avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw", "avx512vbmi", "avx512_vnni", "avx512_bf16", "avx_vnni"}
)

INSTALL_HINT = "scripts/install-local-backend.sh   (or: moodbench install-backend)"

#: The cmake targets of the one combined build, and the binary each one produces under ``build/bin``.
SERVER_TARGET = "llama-server"
GENERATOR_TARGET = "llama-cvector-generator"
BUILD_TARGETS: tuple[str, ...] = (SERVER_TARGET, GENERATOR_TARGET)


class LocalBackendMissing(UsageError, RuntimeError):
    """A llama.cpp binary is not installed; the message carries the install command (exit 2 in every command)."""


# ------------------------------------------------------------------------------------------ paths
@functools.cache
def cpu_flags() -> frozenset[str]:
    """This machine's CPU feature flags (Linux ``/proc/cpuinfo``); empty where that cannot be read. Read once per
    process: every binary look-up (each server start, each ``_all_cached``) names the variant."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def build_variant(flags: frozenset[str] | None = None) -> str:
    """``avx512`` where the CPU (``flags``, default this machine's) has every AVX-512 extension the build uses,
    else ``avx2`` (the portable build, also the name for CPUs whose flags cannot be read)."""
    return "avx512" if AVX512_CPU_FLAGS <= (cpu_flags() if flags is None else flags) else "avx2"


def bin_dir() -> Path:
    return cache_root() / "bin"


def cached_binary(target: str) -> Path:
    """``<cache>/bin/<target>-<version>[-avx512]``: versioned, so a later pin never silently runs an older
    binary, and named by its instruction set (the portable ``avx2`` build keeps the plain name)."""
    variant = build_variant()
    return bin_dir() / f"{target}-{LLAMA_CPP_PYTHON_VERSION}{'' if variant == 'avx2' else '-' + variant}"


def cached_server_binary() -> Path:
    return cached_binary(SERVER_TARGET)


def cached_generator_binary() -> Path:
    return cached_binary(GENERATOR_TARGET)


def _is_exe(p: Path) -> bool:
    return p.is_file() and os.access(p, os.X_OK)


def _find(target: str, env_var: str) -> Path | None:
    env = os.environ.get(env_var)
    if env:
        p = Path(env).expanduser()
        return p if _is_exe(p) else None
    p = cached_binary(target)
    if _is_exe(p):
        return p
    found = shutil.which(target)
    return Path(found) if found else None


def find_llama_server() -> Path | None:
    """``$MOODBENCH_LLAMA_SERVER``, else our cached build, else a ``llama-server`` on PATH."""
    return _find(SERVER_TARGET, "MOODBENCH_LLAMA_SERVER")


def find_cvector_generator() -> Path | None:
    """``$MOODBENCH_CVECTOR_GENERATOR``, else our cached build, else a ``llama-cvector-generator`` on PATH."""
    return _find(GENERATOR_TARGET, "MOODBENCH_CVECTOR_GENERATOR")


def _missing(found: Path | None, env_var: str, what: str, how: str, binary: str) -> Path:
    """``found``, or :class:`LocalBackendMissing` naming the binary, a bad ``env_var`` and the install command."""
    if found is not None:
        return found
    env = os.environ.get(env_var)
    extra = f" (${env_var}={env} is not an executable file)" if env else ""
    raise LocalBackendMissing(
        f"{what} is not installed{extra}.\n{how}:\n    {INSTALL_HINT}\nor point {env_var} at an existing {binary} binary."
    )


def llama_server_path() -> Path:
    """The server binary, or :class:`LocalBackendMissing` saying how to install it."""
    return _missing(
        find_llama_server(),
        "MOODBENCH_LLAMA_SERVER",
        "the local model backend (llama.cpp's llama-server)",
        "Install it once (builds llama.cpp for this CPU's instruction set, AVX2 or AVX-512, with a progress bar: ~4-11 min on 2 cores)",
        "llama-server",
    )


def cvector_generator_path() -> Path:
    """The control-vector generator binary, or :class:`LocalBackendMissing` saying how to install it."""
    return _missing(
        find_cvector_generator(),
        "MOODBENCH_CVECTOR_GENERATOR",
        "llama.cpp's llama-cvector-generator (builds steering vectors)",
        "It is built together with llama-server; an older cache that has only the server is rebuilt once",
        "llama-cvector-generator",
    )


def ensure_local_backend() -> None:
    """Raise :class:`LocalBackendMissing` (with the install command) unless llama-server is available."""
    llama_server_path()


# ---------------------------------------------------------------------------------------- helpers
def _say(console: Any, msg: str) -> None:
    if console is None:
        print(msg, file=sys.stderr, flush=True)
    else:
        console.print(msg, markup=False, highlight=False)


@contextlib.contextmanager
def _lock(name: str) -> Iterator[None]:
    """Serialise concurrent installs (e.g. ./demo and a test run) so two builds never race on 2 cores."""
    bin_dir().mkdir(parents=True, exist_ok=True)
    with open(bin_dir() / f".{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run(cmd: Sequence[str], *, log: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
    with open(log, "ab") as fh:
        fh.write(("\n$ " + " ".join(cmd) + "\n").encode())
        fh.flush()
        proc = subprocess.run(
            list(cmd), stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=cwd, stdin=subprocess.DEVNULL, check=False
        )
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-25:]
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n  log: {log}\n" + "\n".join(tail))


# --------------------------------------------------------------------------------------- progress
_NINJA_RE = re.compile(r"^\[(\d+)/(\d+)\]")
_MAKE_RE = re.compile(r"^\[\s*(\d{1,3})%\]")


def parse_build_progress(line: str) -> tuple[int, int] | None:
    """``(done, total)`` from one build output line, or None; pure function.

    ninja writes ``[12/206] Building CXX object ...`` (one line per edge when its output is not a
    terminal); make writes ``[ 42%] Building ...``, returned as ``(42, 100)``.
    """
    if m := _NINJA_RE.match(line):
        done, total = int(m.group(1)), int(m.group(2))
        return (done, total) if total > 0 and done <= total else None
    if m := _MAKE_RE.match(line):
        pct = int(m.group(1))
        return (pct, 100) if pct <= 100 else None
    return None


class BuildProgress:
    """Shows a long build's progress: a rich bar with ETA on a terminal, a plain line per ``step`` off one.

    Why both: an interactive user wants a live bar; a CI log or a pipe wants a few lines it can keep
    (a live bar there is either invisible or hundreds of redraws). ``console`` is a rich Console or None
    (then stderr). Use as a context manager and feed it every output line with :meth:`line`.
    """

    def __init__(self, label: str, console: Any = None, *, step: float = 0.10, clock: Any = time.monotonic) -> None:
        from moodbench._util.console import stderr_console

        self.label = label
        self.console = console if console is not None else stderr_console()
        self.step = step
        self.clock = clock
        self.done = 0
        self.total = 0
        self._t0 = clock()
        self._next_report = step
        self._bar: Any = None
        self._task: Any = None
        self.interactive = bool(getattr(self.console, "is_terminal", False))

    def __enter__(self) -> Self:
        if self.interactive:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(bar_width=30), MofNCompleteColumn(), TextColumn("elapsed"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=self.console, transient=False,
            )  # fmt: skip
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def line(self, text: str) -> None:
        got = parse_build_progress(text)
        if got is None:
            return
        self.done, self.total = got
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, total=self.total)
            return
        frac = self.done / self.total
        if frac + 1e-9 >= self._next_report or self.done == self.total:
            while self._next_report <= frac + 1e-9:
                self._next_report += self.step
            elapsed = self.clock() - self._t0
            eta = elapsed / frac * (1 - frac) if frac > 0 else 0.0
            tail = "done" if self.done == self.total else f"ETA {_mmss(eta)}"
            msg = f"{self.label}: {frac:4.0%} ({self.done}/{self.total}) elapsed {_mmss(elapsed)}, {tail}"
            self.console.print(msg, markup=False, highlight=False, soft_wrap=True)


def _mmss(seconds: float) -> str:
    s = max(0, round(seconds))
    return f"{s // 60}:{s % 60:02d}"


def _run_with_progress(cmd: Sequence[str], *, log: Path, progress: BuildProgress, cwd: Path | None = None) -> None:
    """Like :func:`_run`, but reads the output line by line (to the log and to ``progress``)."""
    with open(log, "ab") as fh:
        fh.write(("\n$ " + " ".join(cmd) + "\n").encode())
        fh.flush()
        proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd, stdin=subprocess.DEVNULL)
        assert proc.stdout is not None
        for raw in proc.stdout:
            fh.write(raw)
            progress.line(raw.decode(errors="replace"))
        fh.flush()
        rc = proc.wait()
    if rc != 0:
        tail = log.read_text(errors="replace").splitlines()[-25:]
        raise RuntimeError(f"command failed ({rc}): {' '.join(cmd)}\n  log: {log}\n" + "\n".join(tail))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _fetch_sdist(log: Path, console: Any) -> Path:
    """The pinned llama-cpp-python sdist, cached in ``<cache>/src`` and checked against its sha256.

    Straight from PyPI's simple index when pip has no index of its own (:mod:`moodbench.serve._sources`: 24 s
    less with an empty pip cache), else, or when that fails, through ``pip download``.
    """
    dest_dir = cache_root() / "src"
    dest_dir.mkdir(parents=True, exist_ok=True)
    sdist = dest_dir / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
    if sdist.is_file() and _sha256(sdist) == SDIST_SHA256:
        return sdist
    _say(console, f"Downloading llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION} sources from PyPI ...")
    if not pip_index_configured():  # straight from PyPI: no isolated build environment for the metadata
        try:
            return download_release_file("llama-cpp-python", sdist.name, SDIST_SHA256, SDIST_SIZE, sdist)
        except SourcesError as e:
            with open(log, "a") as fh:
                fh.write(f"direct download from PyPI failed ({e}); asking pip\n")
    with tempfile.TemporaryDirectory(prefix="moodbench-sdist-") as tmp:
        # pip prepares the sdist's metadata in an isolated env (scikit-build-core); nothing is compiled.
        _run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary=:all:", "--no-cache-dir",
             "--disable-pip-version-check", "--progress-bar", "off", "-d", tmp,
             f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"],
            log=log,
        )  # fmt: skip
        got = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"), None)
        if got is None:
            raise RuntimeError(f"pip did not download the llama-cpp-python sdist (see {log})")
        digest = _sha256(got)
        if digest != SDIST_SHA256:
            raise RuntimeError(f"llama-cpp-python sdist sha256 {digest} != pinned {SDIST_SHA256}; refusing to build it")
        shutil.move(str(got), sdist)
    return sdist


def _check_toolchain() -> None:
    missing = [t for t in ("cmake", "c++", "cc") if shutil.which(t) is None]
    if missing:
        raise RuntimeError(
            f"building llama-server needs {', '.join(missing)} (Debian/Ubuntu: apt-get install cmake g++ ninja-build; "
            "macOS: xcode-select --install && brew install cmake)"
        )


# ------------------------------------------------------------------------------------------ builds
def _all_cached() -> bool:
    return all(_is_exe(cached_binary(t)) for t in BUILD_TARGETS)


def build_local_binaries(*, force: bool = False, console: Any = None, jobs: int | None = None) -> dict[str, Path]:
    """Build (once) the cached ``llama-server`` and ``llama-cvector-generator`` of this CPU's variant; ``{target: path}``.

    One cmake configuration, one ``cmake --build --target llama-server llama-cvector-generator``: the
    targets share all libraries. When any of the two cached binaries is missing (e.g. a cache from before
    the generator existed) both are rebuilt together, so they always come from the same sources and flags.
    """
    with _lock("llama-server"):
        if _all_cached() and not force:
            return {t: cached_binary(t) for t in BUILD_TARGETS}
        _check_toolchain()
        log = bin_dir() / "llama-server-build.log"
        log.write_text("")
        sdist = _fetch_sdist(log, console)
        t0 = time.monotonic()
        names = " + ".join(BUILD_TARGETS)
        variant = build_variant()
        _say(console, f"Building {names} ({variant}, -DGGML_NATIVE=OFF) from {sdist.name}; log: {log}")
        with tempfile.TemporaryDirectory(prefix="moodbench-llama-build-") as tmp:
            tmpdir = Path(tmp)
            with tarfile.open(sdist) as tf:
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(tmpdir, filter="data")  # refuses links/paths escaping tmpdir
                else:  # pragma: no cover - Python < 3.11.4; the archive's sha256 is pinned anyway
                    tf.extractall(tmpdir)
            src = tmpdir / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}" / "vendor" / "llama.cpp"
            build = tmpdir / "build"
            gen = ["-G", "Ninja"] if shutil.which("ninja") else []
            _say(console, "  configuring (cmake) ...")
            _run(["cmake", "-S", str(src), "-B", str(build), *gen, *CMAKE_FLAGS, *VARIANT_FLAGS[variant]], log=log)
            with BuildProgress("compiling", console) as progress:
                _run_with_progress(
                    ["cmake", "--build", str(build), "--target", *BUILD_TARGETS, "-j", str(jobs or usable_cores())],
                    log=log, progress=progress,
                )  # fmt: skip
            built = {t: build / "bin" / t for t in BUILD_TARGETS}
            for b in built.values():
                if not b.is_file():
                    raise RuntimeError(f"build finished but {b} is missing (see {log})")
                # Smoke test before caching: a binary that cannot even print its version must not be kept.
                _run([str(b), "--version"], log=log)
            for t, b in built.items():
                target = cached_binary(t)
                tmp_target = target.with_name(target.name + ".tmp")
                shutil.copy2(b, tmp_target)
                os.chmod(tmp_target, 0o755)
                os.replace(tmp_target, target)  # atomic: a running server keeps its old inode
        _say(console, f"{names} built in {time.monotonic() - t0:.0f}s -> {bin_dir()}")
        return {t: cached_binary(t) for t in BUILD_TARGETS}


def build_llama_server(*, force: bool = False, console: Any = None, jobs: int | None = None) -> Path:
    """Build (once, together with the generator) and return the cached ``llama-server`` binary."""
    return build_local_binaries(force=force, console=console, jobs=jobs)[SERVER_TARGET]


def _cached_wheel() -> Path | None:
    wheels = sorted((cache_root() / "wheels").glob(f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}-*.whl"))
    return wheels[-1] if wheels else None


def install_python_binding(*, force: bool = False, console: Any = None) -> None:
    """Install the portable ``llama-cpp-python`` wheel into this interpreter, building it once if needed."""
    with _lock("llama-cpp-python"):
        if not force:
            from importlib.metadata import PackageNotFoundError, version

            with contextlib.suppress(PackageNotFoundError):
                if version("llama-cpp-python") == LLAMA_CPP_PYTHON_VERSION:
                    return
        log = bin_dir() / "llama-cpp-python-build.log"
        wheel = None if force else _cached_wheel()
        if wheel is None:
            _check_toolchain()
            wheel_dir = cache_root() / "wheels"
            wheel_dir.mkdir(parents=True, exist_ok=True)
            _say(console, f"Building the llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} wheel (portable, ~3-5 min); log: {log}")
            env = dict(os.environ, CMAKE_ARGS="-DGGML_NATIVE=OFF", FORCE_CMAKE="1")
            _run(
                [sys.executable, "-m", "pip", "wheel", "--no-cache-dir", "--no-deps", "-w", str(wheel_dir),
                 f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"],
                log=log, env=env,
            )  # fmt: skip
            wheel = _cached_wheel()
            if wheel is None:
                raise RuntimeError(f"pip wheel produced no llama-cpp-python wheel (see {log})")
        _run([sys.executable, "-m", "pip", "install", "--no-cache-dir", "--disable-pip-version-check", str(wheel)], log=log)


def install_local_backend(
    *,
    force: bool = False,
    with_python: bool = False,
    model: str | None = DEFAULT_MODEL,
    console: Any = None,
) -> Path:
    """Idempotent one-stop install: server binary (+ optional Python binding) + a verified model.

    Returns the server binary path. ``model=None`` skips fetching a model.
    """
    server = build_llama_server(force=force, console=console)
    if with_python:
        install_python_binding(force=force, console=console)
    if model:
        path = resolve_model(model, console=console)
        _say(console, f"model {model}: {path}")
    return server
