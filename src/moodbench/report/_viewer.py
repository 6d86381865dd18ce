"""Transcript viewer: one static HTML page per simulation plus a filterable index, and a tiny server.

Static files (no server needed to read them; ``moodbench view`` only adds convenience) so a run's
transcripts can be zipped and shared. Each page shows what a researcher needs to judge one
conversation: who said what, every tool call with its arguments and result, the exact emotional
block the customer was given (from the ``prompts`` table) or, for a steered customer, the control vector
added to its activations (sha256, scale, layers and method, from the record's ``steering``), how tau2
scored it, and the fidelity flags with their evidence. Pages link to the same task and trial under the other variants, since
effects are paired comparisons.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import threading
import webbrowser
from collections import defaultdict
from collections.abc import Callable
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from moodbench.report._render import render
from moodbench.results import FLAG_NAMES, ConversationRecord, Run

_EMOTION_BLOCK = re.compile(r"<emotional_state>.*?</emotional_state>", re.DOTALL)
MAX_TOOL_RESULT = 6000  # characters shown before a tool result is folded away


def page_name(c: ConversationRecord) -> str:
    return f"sim-{c.id}.html"


def outcome(c: ConversationRecord) -> str:
    if c.excluded:
        return "excluded"
    return "success" if c.success else "failed"


def _pretty(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, indent=2, ensure_ascii=False)


def _messages(c: ConversationRecord) -> list[dict[str, Any]]:
    out = []
    for m in c.messages:
        role = m.get("role")
        raw = m.get("raw_data") or {}
        item: dict[str, Any] = {
            "role": role,
            "label": {"assistant": "Agent", "user": "Customer", "tool": "Tool result"}.get(str(role), str(role)),
            "content": m.get("content") if isinstance(m.get("content"), str) else None,
            "tool_calls": [
                {"name": tc.get("name"), "arguments": _pretty(tc.get("arguments") or {}), "id": tc.get("id")}
                for tc in (m.get("tool_calls") or [])
            ],
            "error": bool(m.get("error")),
            "turn": m.get("turn_idx"),
            "badges": [],
            "folded": False,
        }
        if role == "tool" and item["content"]:
            item["content"] = _pretty(item["content"])
            item["folded"] = len(item["content"]) > MAX_TOOL_RESULT
        if raw.get("recovered_text_calls"):
            item["badges"].append(f"{raw['recovered_text_calls']} tool call(s) recovered from text")
        if raw.get("think_stripped"):
            item["badges"].append("<think> stripped")
        if raw.get("invalid_json_arguments"):
            item["badges"].append("invalid JSON arguments")
        if raw.get("finish_reason") == "length":
            item["badges"].append("truncated (max_tokens)")
        if isinstance(m.get("content"), str) and (
            "###STOP###" in m["content"] or "###TRANSFER###" in m["content"] or "###OUT-OF-SCOPE###" in m["content"]
        ):
            item["badges"].append("ends the conversation")
        out.append(item)
    return out


def _reward(info: dict[str, Any] | None) -> dict[str, Any] | None:
    if not info:
        return None
    return {
        "reward": info.get("reward"),
        "basis": info.get("reward_basis") or [],
        "breakdown": info.get("reward_breakdown") or {},
        "db": info.get("db_check"),
        "actions": [
            {
                "name": (a.get("action") or {}).get("name"),
                "arguments": _pretty((a.get("action") or {}).get("arguments") or {}),
                "requestor": (a.get("action") or {}).get("requestor"),
                "match": a.get("action_match"),
                "reward": a.get("action_reward"),
            }
            for a in (info.get("action_checks") or [])
        ],
        "nl": [
            {"text": n.get("nl_assertion"), "met": n.get("met"), "justification": n.get("justification")}
            for n in (info.get("nl_assertions") or [])
        ],
        "env": [
            {"text": _pretty(e.get("env_assertion")), "met": e.get("met"), "reward": e.get("reward")}
            for e in (info.get("env_assertions") or [])
        ],
        "communicate": [{"text": x.get("info"), "met": x.get("met")} for x in (info.get("communicate_checks") or [])],
        "info": info.get("info"),
    }


def _index_row(run: Run, c: ConversationRecord, href: str) -> dict[str, Any]:
    return {
        "run": run.label,
        "run_slug": run.slug,
        "href": href,
        "id": c.id,
        "domain": c.domain,
        "task": c.task_id,
        "variant": c.variant,
        "trial": c.trial,
        "reward": c.reward,
        "exit": c.exit_reason.value,
        "outcome": outcome(c),
        "flags": [f.replace("user_", "") for f in c.flags.raised()],
        "turns": c.stats.turns,
        "steering": (
            {"scale": f"{c.steering.scale:g}", "sha": c.steering.vector_sha256[:12]} if c.steering is not None else None
        ),
        "first_user": (c.user_texts[0][:140] + ("…" if len(c.user_texts[0]) > 140 else "") if c.user_texts else ""),
    }


def write_transcripts(runs: list[Run], analyses: list[dict[str, Any]], out: Path) -> Path:
    """Write ``out/transcripts/index.html`` and one page per final row; return the index path."""
    from moodbench.analysis._variants import families_spec, methods_of  # here: serving pages needs no statistics
    from moodbench.judges import families_of, text_scores

    root = Path(out) / "transcripts"
    root.mkdir(parents=True, exist_ok=True)
    index_rows: list[dict[str, Any]] = []
    for run in runs:
        run_slug = run.slug
        folder = root / run_slug
        folder.mkdir(parents=True, exist_ok=True)
        siblings: dict[tuple, list[ConversationRecord]] = defaultdict(list)
        for c in run.records:
            siblings[c.pair_key].append(c)
        order = {v: i for i, v in enumerate(run.variants)}
        for c in run.records:
            user_prompt = run.prompt(c.user_prompt_sha256)
            agent_prompt = run.prompt(c.agent_prompt_sha256)
            block = _EMOTION_BLOCK.search(user_prompt or "")
            scores = text_scores(c.user_texts)
            fam = families_of(families_spec(c.variant))
            page = render(
                "transcript.html.j2",
                run=run.label,
                run_slug=run_slug,
                c=c,
                outcome=outcome(c),
                description=c.exit_reason.description,
                messages=_messages(c),
                reward=_reward(c.reward_info),
                flags=[(f, getattr(c.flags, f)) for f in FLAG_NAMES],
                evidence=c.flags.evidence,
                emotion_block=block.group(0) if block else None,
                steering=c.steering.model_dump(mode="json") if c.steering is not None else None,
                prompted=c.variant != "control" and any(m in ("prompt", "both") for m in methods_of(c.variant)),
                user_prompt=user_prompt,
                agent_prompt=agent_prompt,
                scores=scores,
                families=fam,
                tokens={
                    k: int(getattr(c, k))
                    for k in ("agent_prompt_tokens", "agent_completion_tokens", "user_prompt_tokens", "user_completion_tokens")
                },
                data=c.model_dump(mode="json", exclude={"simulation"}),
                siblings=sorted((s for s in siblings[c.pair_key] if s.id != c.id), key=lambda s: order.get(s.variant, 99)),
                page_name=page_name,
                outcome_of=outcome,
            )
            (folder / page_name(c)).write_text(page, encoding="utf-8")
            index_rows.append(_index_row(run, c, f"{run_slug}/{page_name(c)}"))
    index_rows.sort(key=lambda r: (r["run"], r["domain"], r["task"], r["trial"], r["variant"]))
    variants = list(dict.fromkeys(v for run in runs for v in run.variants))
    index = root / "index.html"
    index.write_text(
        render(
            "index.html.j2",
            rows=index_rows,
            runs=[(r.label, r.slug) for r in runs],
            variants=variants,
            exits=sorted({r["exit"] for r in index_rows}),
            domains=sorted({r["domain"] for r in index_rows}),
            flags=[f.replace("user_", "") for f in FLAG_NAMES],
        ),
        encoding="utf-8",
    )
    return index


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


# A connection that has not sent its request within this many seconds is closed, and at most this many
# are served at once (more are closed at once): 300 half-sent requests cannot hold 300 threads.
REQUEST_TIMEOUT_S = 10.0
READY_WAIT_S = 300.0  # the longest a request waits for the report view is building (a big run's pages: minutes)
MAX_CONNECTIONS = 32


class _ViewerHandler(SimpleHTTPRequestHandler):
    """Read-only files from one folder, for loopback clients that name this server.

    Protections a plain ``http.server`` lacks: the ``Host`` header must be a loopback name with the served
    port (else 421), so a web page on another origin that rebinds its DNS name to 127.0.0.1 cannot read the
    transcripts through the victim's browser; a folder is never listed (404 unless it has an index.html),
    so only the pages the report wrote are reachable; nothing is served through a symlink (a link
    planted in a shared run directory, ``x -> /``, would otherwise serve any readable file); a path that
    cannot name a file (a NUL byte) is a 400; a connection idle for :data:`REQUEST_TIMEOUT_S` is closed.
    """

    allowed_hosts: frozenset[str] = frozenset()
    # side-by-side pages of any matched pair, rendered on demand (report._anatomy_section.pair_page)
    pair_page: Callable[[str, int, int], str | None] | None = None
    # set once the pages exist: ``view`` listens at once and builds a missing or stale report meanwhile; a
    # request that comes earlier waits for it (a stale page is never served), up to READY_WAIT_S, then gets a 503
    ready: threading.Event | None = None
    timeout = REQUEST_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _host_ok(self) -> bool:
        host = (self.headers.get("Host") or "").strip().lower()
        return host in self.allowed_hosts

    def _through_symlink(self, path: str) -> bool:
        """Whether ``path`` (inside the served folder) or any folder between it and the root is a symlink."""
        root = os.path.abspath(self.directory)
        rel = os.path.relpath(os.path.abspath(path), root)
        if rel.startswith(os.pardir):
            return True
        if os.path.islink(root):
            return True
        current = root
        for part in [] if rel == os.curdir else rel.split(os.sep):
            current = os.path.join(current, part)
            if os.path.islink(current):
                return True
        return False

    def send_head(self) -> Any:
        if not self._host_ok():
            self.send_error(
                421, "Misdirected Request", "this viewer answers only http://127.0.0.1, localhost or [::1] on its own port"
            )
            return None
        if self.ready is not None and not self.ready.wait(READY_WAIT_S):
            self.send_error(503, "Service Unavailable", "the report is still being built; reload in a moment")
            return None
        try:
            path = self.translate_path(self.path)
            if "\x00" in path:
                raise ValueError("NUL in path")
            if self._through_symlink(path):
                self.send_error(404, "Not Found")
                return None
            if self.pair_page is not None and not os.path.exists(path):
                pair = _pair_request(self.path)
                if pair is not None:
                    return self._send_page(self.pair_page(*pair))
            if os.path.isdir(path) and not any(os.path.isfile(os.path.join(path, name)) for name in ("index.html", "index.htm")):
                self.send_error(404, "Not Found")
                return None
            return super().send_head()
        except (ValueError, UnicodeError):
            self.send_error(400, "Bad Request", "the path does not name a file")
            return None

    def _send_page(self, page: str | None) -> Any:
        if page is None:
            self.send_error(404, "Not Found", "no such pair of conversations (same run, task and trial)")
            return None
        body = page.encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        return io.BytesIO(body)

    def list_directory(self, path: Any) -> Any:
        self.send_error(404, "Not Found")
        return None


_PAIR_URL = re.compile(r"^/transcripts/([A-Za-z0-9._-]+)/pair-(\d{1,12})-(\d{1,12})\.html$")


def _pair_request(url: str) -> tuple[str, int, int] | None:
    """(run slug, baseline id, variant id) of a side-by-side page URL, else None."""
    m = _PAIR_URL.match(urlsplit(url).path)
    return None if m is None else (m.group(1), int(m.group(2)), int(m.group(3)))


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most :data:`MAX_CONNECTIONS` at once; further connections are closed at once."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def _allowed_hosts(port: int) -> frozenset[str]:
    names = {f"{n}:{port}" for n in LOOPBACK_NAMES}
    if port == 80:
        names |= set(LOOPBACK_NAMES)
    return frozenset(names)


def start_server(
    directory: Path,
    port: int = 0,
    host: str = "127.0.0.1",
    pair_page: Callable[[str, int, int], str | None] | None = None,
    ready: threading.Event | None = None,
) -> ThreadingHTTPServer:
    """Serve ``directory`` read-only on loopback from a daemon thread; ``port=0`` picks a free port.

    ``pair_page``: renders ``transcripts/RUN/pair-BASEID-VARID.html`` for any matched pair the report did not write.
    ``ready``: while it is not set (the pages are being built), requests wait for it.

    Requests whose ``Host`` is not a loopback name with the bound port get 421; folders are not listed; nothing
    is served through a symlink; connections time out and are bounded in number.
    """

    class Handler(_ViewerHandler):  # one class per server: it knows its own port
        pass

    server = _BoundedServer((host, port), functools.partial(Handler, directory=str(directory)))
    Handler.allowed_hosts = _allowed_hosts(int(server.server_address[1]))
    Handler.pair_page = staticmethod(pair_page) if pair_page is not None else None
    Handler.ready = ready
    threading.Thread(target=server.serve_forever, name="moodbench-view", daemon=True).start()
    return server


def open_in_browser(url: str) -> None:
    try:
        webbrowser.open(url)
    except Exception:  # noqa: BLE001 - no browser is not an error; the URL is printed
        pass
