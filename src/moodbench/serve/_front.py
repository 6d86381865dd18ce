"""The small in-process HTTP front of a llama.cpp server: forced tool calls for chat requests, relay for the rest.

It listens on the server's public port; "required"/named ``tool_choice`` requests are rewritten by
:mod:`._forced`, every other request and response (streams included) is relayed unchanged.
"""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from moodbench.serve._forced import ForcedCall, _as_sse, finish_forced_response, plan_chat_request

_HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
    "transfer-encoding", "upgrade", "content-length", "host",
}  # fmt: skip


class _Front:
    """Minimal HTTP front: forced tool calls for chat requests (see :func:`plan_chat_request`), relays the rest.

    Streaming (SSE) responses are relayed chunk by chunk and delimited by closing the connection, so
    clients see tokens as llama-server produces them.
    """

    def __init__(self, host: str, port: int, upstream: tuple[str, int], upstream_timeout: float = 3600.0) -> None:
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "moodbench-llamacpp"

            def log_message(self, format: str, *args: Any) -> None:
                pass  # llama-server logs every request itself

            def do_GET(self) -> None:
                front._handle(self, None)

            def do_POST(self) -> None:
                front._handle(self, _read_body(self))

            def do_OPTIONS(self) -> None:
                front._handle(self, b"")

        self.upstream = upstream
        self.upstream_timeout = upstream_timeout
        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="llamacpp-front", daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        if self.thread.is_alive():  # shutdown() would wait forever for a loop that never ran
            self.httpd.shutdown()
        self.httpd.server_close()

    def _handle(self, h: BaseHTTPRequestHandler, body: bytes | None) -> None:
        forced: ForcedCall | None = None
        if body and h.command == "POST" and h.path.split("?")[0].rstrip("/").endswith("chat/completions"):
            try:
                req = json.loads(body)
            except ValueError:
                req = None  # bad JSON is llama-server's to report
            if isinstance(req, dict) and req.get("tool_choice") not in (None, "auto", "none"):
                try:
                    upstream_req, forced = plan_chat_request(req)
                except ValueError as e:
                    return self._send_json(h, 400, _error_body(400, str(e)))
                if forced is not None:
                    body = json.dumps(upstream_req).encode()
        headers = {k: v for k, v in h.headers.items() if k.lower() not in _HOP_BY_HOP}
        if body is not None:
            headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection(*self.upstream, timeout=self.upstream_timeout)
        try:
            conn.request(h.command, h.path, body=body, headers=headers)
            resp = conn.getresponse()
        except OSError as e:
            conn.close()
            return self._send_json(h, 502, _error_body(502, f"llama-server unreachable: {e}"))
        try:
            if forced is not None:
                self._finish_forced(h, resp, forced)
            else:
                self._relay(h, resp)
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True  # the client went away; llama-server notices and stops the slot
        finally:
            conn.close()

    def _finish_forced(self, h: BaseHTTPRequestHandler, resp: http.client.HTTPResponse, forced: ForcedCall) -> None:
        raw = resp.read()
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if resp.status != 200 or not isinstance(data, dict):
            h.send_response(resp.status, resp.reason)
            h.send_header("Content-Type", resp.getheader("Content-Type") or "application/json")
            h.send_header("Content-Length", str(len(raw)))
            h.end_headers()
            h.wfile.write(raw)
            return
        done = finish_forced_response(data, forced)
        if not forced.stream:
            return self._send_json(h, 200, json.dumps(done, ensure_ascii=False).encode())
        payload = _as_sse(done, forced)
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Cache-Control", "no-cache")
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)

    @staticmethod
    def _relay(h: BaseHTTPRequestHandler, resp: http.client.HTTPResponse) -> None:
        h.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in _HOP_BY_HOP:
                h.send_header(k, v)
        length = resp.getheader("Content-Length")
        if length is not None and resp.getheader("Transfer-Encoding") is None:
            h.send_header("Content-Length", length)
            h.end_headers()
            h.wfile.write(resp.read())
        else:  # streamed: relay as it comes, end by closing
            h.send_header("Connection", "close")
            h.end_headers()
            h.close_connection = True
            while chunk := resp.read1(65536):
                h.wfile.write(chunk)
                h.wfile.flush()

    @staticmethod
    def _send_json(h: BaseHTTPRequestHandler, status: int, data: bytes) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)


def _read_body(h: BaseHTTPRequestHandler) -> bytes:
    """The request body, by Content-Length or chunked transfer encoding (some clients stream bodies)."""
    if "chunked" in (h.headers.get("Transfer-Encoding") or "").lower():
        parts: list[bytes] = []
        while True:
            size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while h.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return b"".join(parts)
            parts.append(h.rfile.read(size))
            h.rfile.readline()  # CRLF after each chunk
    n = int(h.headers.get("Content-Length") or 0)
    return h.rfile.read(n) if n else b""


def _error_body(status: int, message: str) -> bytes:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return json.dumps({"error": {"code": status, "message": message, "type": kind}}).encode()
