"""The bridge's note timing with the control page open, against a baseline without it, same run.

Runs ``bench/bridge.py``'s JACK benchmark (dummy JACK server, ``serve --backend jack`` as a
subprocess, this process as the DAW) in alternating rounds: ``baseline`` (plain ``serve``) and
``page`` (``serve --ui --osc-port 0 --osc-out ...``, with the page open in Debian's headless
chromium and an OSC listener taking the per-bar output). It reports both runs' inference time,
deadline margin, misses, late drops, send error and arrival error side by side, and what the page
saw (bars drawn), so the claim "a --ui bridge keeps the note timing" is checked in one run.

Usage: ``python bench/ui.py [--bars 24] [--bpm 160] [--rounds 1] [--model FILE]``; needs the
``[ui]`` extra, ``jackd`` and ``chromium``. Prints one JSON line last. Timings depend on the
machine's load (chromium's rendering competes for the same cores); this reports, it asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("bench_bridge", HERE / "bridge.py")
assert _spec is not None and _spec.loader is not None
bridge: Any = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bridge)


def _evaluate(ws: Any, expression: str) -> Any:
    """Value of a JavaScript expression in the page (Chrome DevTools protocol)."""
    ws.send(json.dumps({"id": 1, "method": "Runtime.evaluate",
                        "params": {"expression": expression, "returnByValue": True}}))
    while True:
        reply = json.loads(ws.recv(timeout=10))
        if reply.get("id") == 1:
            return reply.get("result", {}).get("result", {}).get("value")


class Page:
    """Opens serve's control page in headless chromium once serve prints its URL."""

    def __init__(self) -> None:
        self.seen: dict[str, Any] = {}
        self.osc_messages = 0

    def __call__(self, serve: subprocess.Popen[str]) -> Any:
        from websockets.sync.client import connect

        assert serve.stdout is not None
        lines: list[str] = []
        stdout = serve.stdout
        threading.Thread(target=lambda: lines.extend(stdout), daemon=True).start()
        deadline = time.monotonic() + 20
        while not any("control page:" in line for line in list(lines)):
            if time.monotonic() > deadline:
                raise SystemExit("serve did not print its control page URL")
            time.sleep(0.05)
        url = next(line for line in lines if "control page:" in line).split("control page:")[1].strip()
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if chromium is None:
            raise SystemExit("chromium is not installed (Debian package chromium)")
        profile = tempfile.mkdtemp(prefix="arvae-bench-chromium-")
        args = [chromium, "--headless=new", "--disable-gpu", "--no-first-run", f"--user-data-dir={profile}",
                "--remote-debugging-port=0", url]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")
        browser = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert browser.stderr is not None
        port = None
        for line in browser.stderr:
            match = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            if match:
                port = int(match.group(1))
                break
        errors = browser.stderr
        threading.Thread(target=lambda: [None for _ in errors], daemon=True).start()
        if port is None:
            raise SystemExit("chromium did not start")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as reply:
            target = next(t for t in json.load(reply) if t.get("type") == "page")
        ws = connect(target["webSocketDebuggerUrl"], max_size=None).__enter__()
        deadline = time.monotonic() + 20
        while _evaluate(ws, "document.body && document.body.dataset.state") != "connected":
            if time.monotonic() > deadline:
                raise SystemExit("the page did not connect")
            time.sleep(0.05)
        self.seen["connected"] = True

        def close() -> None:
            self.seen["last_bar_drawn"] = _evaluate(ws, "Number(document.body.dataset.roll || -1)")
            self.seen["status_bar"] = _evaluate(ws, "Number(document.body.dataset.bar || -1)")
            ws.close()
            browser.terminate()
            try:
                browser.wait(10)
            except subprocess.TimeoutExpired:
                browser.kill()
                browser.wait()
            shutil.rmtree(profile, ignore_errors=True)

        return close


def _osc_sink() -> tuple[socket.socket, int, list[int]]:
    """A UDP socket counting the OSC datagrams serve sends (its --osc-out target)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    count = [0]

    def drain() -> None:
        with contextlib.suppress(OSError):
            while sock.recv(65536):
                count[0] += 1

    threading.Thread(target=drain, daemon=True).start()
    return sock, int(sock.getsockname()[1]), count


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    keys = ("inference_ms", "deadline_margin", "send_error_ms", "arrival_error_ms")
    return {k: report[k] for k in keys} | {"load_1min": report["machine"]["load_1min"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bridge.add_run_arguments(parser)
    parser.add_argument("--rounds", type=int, default=1, help="baseline/page pairs, alternating")
    args = parser.parse_args()
    rounds: list[dict[str, Any]] = []
    for _ in range(args.rounds):
        baseline = bridge.run(args.bars, args.bpm, args.period, args.rate, args.model)
        page = Page()
        sock, port, osc_count = _osc_sink()
        try:
            with_page = bridge.run(args.bars, args.bpm, args.period, args.rate, args.model,
                                   serve_args=["--ui", "--ui-port", "0", "--osc-out", f"127.0.0.1:{port}"],
                                   on_start=page)
        finally:
            sock.close()
        rounds.append({"baseline": _summary(baseline), "page": _summary(with_page) | {
            "page_seen": page.seen, "osc_messages_received": osc_count[0]}})
    setup = {"bars": args.bars, "bpm": args.bpm, "model": str(args.model), "jack_period_frames": args.period,
             "rate": args.rate, "cpus": os.cpu_count()}
    print(json.dumps({"bench": "ui", "setup": setup, "rounds": rounds}))


if __name__ == "__main__":
    main()
