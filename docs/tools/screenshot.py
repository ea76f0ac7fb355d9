"""Screenshot a page in headless Chromium over the DevTools protocol, clicking through the
Dagster UI's first-visit dialog and expanding the asset groups (used for the README images).

Usage: python docs/tools/screenshot.py URL OUT.png [--width 1600 --height 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import websockets

_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
_CLICK_SKIP = """
[...document.querySelectorAll('button')]
  .filter(b => ['Skip', 'Hide navigation'].includes(b.innerText.trim()))
  .forEach(b => b.click()); true
"""
_EXPAND_GROUP = """
(() => {{ const d = [...document.querySelectorAll('foreignObject div')]
  .find(d => d.innerText.split('\\n')[0].trim() === '{name}');
  if (d) {{ const svg = d.querySelector('svg, [role=img]');
            (svg || d).dispatchEvent(new MouseEvent('click', {{bubbles: true}})); }}
  return true; }})()
"""
_GROUPS = ("ingestion", "promotion", "backtest")  # the graph centres on the last one opened
_ZOOM_OUT = """
(() => { const b = [...document.querySelectorAll('button')]
  .filter(b => (b.getAttribute('aria-label') || b.title || '').toLowerCase().includes('zoom out')
            || b.querySelector('[aria-label*="zoom_out"], [data-icon="zoom_out"]'));
  b.forEach(x => x.click()); return b.length; })()
"""


async def _shoot(ws_url: str, url: str, out: Path, width: int, height: int) -> None:
    async with websockets.connect(ws_url, max_size=64 * 1024 * 1024) as ws:
        counter = 0

        async def call(method: str, **params: object) -> dict:
            nonlocal counter
            counter += 1
            await ws.send(json.dumps({"id": counter, "method": method, "params": params}))
            while True:
                reply = json.loads(await ws.recv())
                if reply.get("id") == counter:
                    return reply.get("result", {})

        await call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        await call("Page.navigate", url=url)
        await asyncio.sleep(8)
        await call("Runtime.evaluate", expression=_CLICK_SKIP)
        await asyncio.sleep(1)
        for name in _GROUPS:
            await call("Runtime.evaluate", expression=_EXPAND_GROUP.format(name=name))
            await asyncio.sleep(2)
        for _ in range(2):
            await call("Runtime.evaluate", expression=_ZOOM_OUT)
            await asyncio.sleep(1)
        shot = await call("Page.captureScreenshot", format="png")
        out.write_bytes(base64.b64decode(shot["data"]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("out", type=Path)
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=1000)
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.Popen(
            [
                browser,
                *_FLAGS,
                f"--user-data-dir={profile}",
                "--remote-debugging-port=9333",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(100):
                try:
                    with urllib.request.urlopen("http://127.0.0.1:9333/json") as r:
                        pages = [p for p in json.load(r) if p["type"] == "page"]
                    if pages:
                        break
                except OSError:
                    pass
                time.sleep(0.1)
            asyncio.run(
                _shoot(
                    pages[0]["webSocketDebuggerUrl"], args.url, args.out, args.width, args.height
                )
            )
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
