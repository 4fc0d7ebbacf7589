"""A headless Debian chromium driven over the Chrome DevTools protocol (no selenium, no driver).

:class:`Chromium` starts ``chromium --headless`` with ``--remote-debugging-port=0`` and a fresh
profile, reads the DevTools address it prints, and talks to its one page over a WebSocket:
navigate, evaluate JavaScript (awaiting promises), real mouse clicks, screenshots. Every wait
has a timeout; :meth:`Chromium.close` ends the browser it started (by its process).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    """Path of a chromium executable, or None."""
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    """One headless browser with one page."""

    def __init__(self, executable: str, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="arvae-chromium-")
        args = [executable, "--headless=new", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", "--disable-dev-shm-usage",
                "--hide-scrollbars", "--window-size=1040,760", "--force-device-scale-factor=1",
                f"--user-data-dir={self.profile}", "--remote-debugging-port=0", "about:blank"]
        if os.geteuid() == 0:  # chromium refuses to run as root with its sandbox
            args.insert(1, "--no-sandbox")
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._ids = itertools.count(1)
        self.ws: ClientConnection | None = None
        self._stack = contextlib.ExitStack()
        try:
            port = self._devtools_port()
            self.ws = self._stack.enter_context(connect(self._page_socket(port), max_size=None, open_timeout=timeout))
            self.call("Page.enable")
            self.call("Runtime.enable")
        except BaseException:
            self.close()
            raise

    def _devtools_port(self) -> int:
        assert self.process.stderr is not None
        deadline = time.monotonic() + self.timeout
        lines: list[str] = []
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line:
                if self.process.poll() is not None:
                    break
                continue
            lines.append(line)
            match = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            if match:
                # Keep reading what chromium writes, or a full pipe would block it.
                threading.Thread(target=self._drain, daemon=True).start()
                return int(match.group(1))
        raise RuntimeError("chromium did not start its DevTools server: " + "".join(lines[-5:]))

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for _ in self.process.stderr:
            pass

    def _page_socket(self, port: int) -> str:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=self.timeout) as reply:
                targets = json.load(reply)
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                return str(pages[0]["webSocketDebuggerUrl"])
            time.sleep(0.05)
        raise RuntimeError("chromium has no page")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result (events in between are skipped)."""
        assert self.ws is not None
        ident = next(self._ids)
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while True:
            reply = json.loads(self.ws.recv(timeout=max(deadline - time.monotonic(), 0.001)))
            if reply.get("id") == ident:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply["result"]
                return result

    def evaluate(self, expression: str) -> Any:
        """Value of a JavaScript expression in the page (promises awaited)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript error in {expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        """Navigate and wait until the document has loaded."""
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete' && location.href === " + json.dumps(url), "page load")

    def wait_for(self, expression: str, what: str, timeout: float | None = None) -> Any:
        """Poll a JavaScript expression until truthy; RuntimeError after the timeout."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what} ({expression})")
            time.sleep(0.02)

    def click(self, x: float, y: float) -> None:
        """A real left click (press and release) at page coordinates."""
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def screenshot(self, path: Path) -> bytes:
        """Save a PNG of the page to ``path`` and return its bytes."""
        data = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return data

    def close(self) -> None:
        """Close the page connection and end the browser process (TERM, then KILL after 5 s)."""
        if self.ws is not None:
            with contextlib.suppress(Exception):  # already gone; no reply comes from a browser that closes
                self.ws.send(json.dumps({"id": next(self._ids), "method": "Browser.close", "params": {}}))
            self._stack.close()
            self.ws = None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)
