"""The pinned llama.cpp sources, straight from PyPI when pip would take the long way round.

Why not only ``pip download``: pip reads an sdist's metadata before it keeps the file, and for
llama-cpp-python that means an isolated build environment with scikit-build-core installed into it:
24 s of a fresh ``./demo`` with an empty pip cache (3.4 s with a warm one), for a file whose sha256 is
pinned anyway. PyPI's simple index, the one pip reads, names every file with its URL and sha256 (as JSON,
PEP 691), so when pip is configured with no index of its own the file is fetched directly from there
(benchmarks/README.md, "First contact"). A user who set an index (``PIP_INDEX_URL`` or an ``index-url`` in pip's configuration: a
mirror, a proxy, a policy) gets pip, as before, and so does every case where the direct fetch fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

#: PyPI's simple index page of a project; asked for PEP 691 JSON: ``{"files": [{"filename", "url", "hashes": {"sha256"}}]}``.
PYPI_SIMPLE = "https://pypi.org/simple/{name}/"
_PEP691 = "application/vnd.pypi.simple.v1+json"


class SourcesError(RuntimeError):
    """The direct fetch did not give the pinned file (the message says why; the caller falls back to pip)."""


def pip_index_configured(python: str = sys.executable) -> bool:
    """Whether pip has an index of its own (environment or configuration files), not just PyPI.

    ``extra-index-url`` and ``find-links`` do not count: pip still consults PyPI with them.
    """
    if os.environ.get("PIP_INDEX_URL", "").strip():
        return True
    try:
        out = subprocess.run(
            [python, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return True  # cannot tell: let pip decide
    return any(line.split("=", 1)[0].rsplit(".", 1)[-1] == "index-url" for line in out.splitlines() if "=" in line)


#: The most an index page may send (PyPI's llama-cpp-python page is 84 KB as PEP 691 JSON).
LISTING_LIMIT = 16 << 20


def _read_bounded(response: Any, limit: int, deadline: float, what: str, sink: Callable[[bytes], object]) -> None:
    """Feed ``response``'s body to ``sink`` chunk by chunk: at most ``limit`` bytes, finished by ``deadline``.

    A hostile or broken server cannot fill the disk or memory, nor hold the install by trickling bytes."""
    received = 0
    for chunk in response.iter_bytes(1 << 20):
        received += len(chunk)
        if received > limit:
            raise SourcesError(f"{what} is larger than the {limit:,} bytes expected")
        if time.monotonic() > deadline:
            raise SourcesError(f"{what} did not arrive in time")
        sink(chunk)


def download_release_file(
    name: str,
    filename: str,
    sha256: str,
    size: int,
    dest: Path,
    *,
    index_url: str = PYPI_SIMPLE,
    timeout_s: float = 60.0,
    deadline_s: float = 900.0,
) -> Path:
    """Download ``filename`` of project ``name`` as the index's PEP 691 page lists it into ``dest`` (a file path).

    The listed sha256 must equal the pinned one before anything is downloaded, and the bytes (at most the pinned
    ``size``) must hash to it after; the file appears at ``dest`` only then (a partial download never does).
    ``timeout_s`` bounds each network wait, ``deadline_s`` the whole. Raises :class:`SourcesError`.
    """
    import httpx

    url = index_url.format(name=name)
    timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))
    deadline = time.monotonic() + deadline_s
    try:
        with httpx.Client(timeout=timeout, follow_redirects=True) as client:
            page = bytearray()
            with client.stream("GET", url, headers={"Accept": _PEP691}) as listing:
                listing.raise_for_status()
                if listing.headers.get("content-type", "").split(";")[0].strip() != _PEP691:
                    raise SourcesError(f"the index answered {listing.headers.get('content-type')!r}, not PEP 691 JSON")
                _read_bounded(listing, LISTING_LIMIT, deadline, "the index page", page.extend)
            files = json.loads(page).get("files") or []
            match = next((f for f in files if isinstance(f, dict) and f.get("filename") == filename), None)
            if match is None:
                raise SourcesError(f"{filename} is not among the files the index lists for {name}")
            listed = (match.get("hashes") or {}).get("sha256")
            if listed != sha256:
                raise SourcesError(f"the index lists sha256 {listed} for {filename}, not the pinned {sha256}")
            digest = hashlib.sha256()
            dest.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=dest.parent, prefix=".download-", delete=False) as fh:
                part = Path(fh.name)
                try:
                    with client.stream("GET", urljoin(str(listing.url), str(match["url"]))) as response:
                        response.raise_for_status()

                        def keep(chunk: bytes) -> None:
                            digest.update(chunk)
                            fh.write(chunk)

                        _read_bounded(response, size, deadline, filename, keep)
                except BaseException:
                    part.unlink(missing_ok=True)
                    raise
    except SourcesError:
        raise
    except (httpx.HTTPError, ValueError, KeyError, AttributeError, OSError) as e:
        raise SourcesError(f"{type(e).__name__}: {e}") from None
    if digest.hexdigest() != sha256:
        part.unlink(missing_ok=True)
        raise SourcesError(f"the downloaded {filename} hashes to {digest.hexdigest()}, not the pinned {sha256}")
    os.replace(part, dest)
    return dest
