"""A real headless Chromium, driven through chromedriver's W3C WebDriver HTTP API with the standard
library only (no Selenium to pin, nothing that downloads its own browser).

Why not Selenium: the tests need seven WebDriver calls (new session, timeouts, navigate, execute a
script, a DevTools command for the page size, screenshot, end session). Selenium 4.51 brings 15
wheels, 13 MB (trio, urllib3, websocket-client and their dependencies, measured with ``pip
download selenium``), and its Selenium Manager fetches a driver of its own when none matches;
this file speaks the same seven calls to the system's chromedriver in about 140 lines.

Tests open a page as a person would, from disk, and ask the browser what it loaded: every
``<audio>`` after its metadata (its ``duration``) or its error, every ``<img>`` after it loaded or
failed, and a full-page screenshot.
"""
from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DRIVERS = ("chromedriver",)
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--mute-audio",
        "--allow-file-access-from-files", "--window-size=1400,1000"]

#: Waits for every image and every audio element's metadata (or its error), then reports them.
MEDIA_SCRIPT = """
const done = arguments[arguments.length - 1];
const settle = (el, ok, bad, ready) => ready(el) ? Promise.resolve() : new Promise(resolve => {
  el.addEventListener(ok, resolve, {once: true}); el.addEventListener(bad, resolve, {once: true});
});
const audios = [...document.querySelectorAll('audio')];
const imgs = [...document.images];
for (const a of audios) { if (a.readyState === 0 && !a.error) a.load(); }
Promise.all([
  ...audios.map(a => settle(a, 'loadedmetadata', 'error', e => e.readyState >= 1 || e.error)),
  ...imgs.map(i => settle(i, 'load', 'error', e => e.complete)),
]).then(() => done({
  audio: audios.map(a => ({src: a.getAttribute('src'), url: a.currentSrc, duration: a.duration,
                           error: a.error ? a.error.code : null})),
  images: imgs.map(i => ({src: i.getAttribute('src'), url: i.currentSrc, width: i.naturalWidth,
                          ok: i.complete && i.naturalWidth > 0})),
  variants: [...document.querySelectorAll('section.variant')].map(s => s.dataset.variant),
}));
"""


def find_browser() -> tuple[str, str] | None:
    """``(chromium, chromedriver)`` paths when both are installed, else None."""
    browser = next((p for name in BROWSERS if (p := shutil.which(name))), None)
    driver = next((p for name in DRIVERS if (p := shutil.which(name))), None)
    return (browser, driver) if browser and driver else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """One headless Chromium session (a context manager): open a file, run a script, take a screenshot."""

    def __init__(self, browser: str, driver: str, timeout: float = 60.0) -> None:
        self.port = _free_port()
        self.timeout = timeout
        self.driver = subprocess.Popen([driver, f"--port={self.port}"], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
        self._wait_ready()
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome",
                                                 "goog:chromeOptions": {"binary": browser, "args": ARGS}}}}
        self.session = self._call("POST", "/session", caps)["sessionId"]
        self._call("POST", f"/session/{self.session}/timeouts", {"script": int(timeout * 1000),
                                                                 "pageLoad": int(timeout * 1000)})

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if self._call("GET", "/status").get("ready"):
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.close()
        raise RuntimeError("chromedriver did not start within 20 s")

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout + 30) as response:
                return json.loads(response.read() or b"{}").get("value")
        except urllib.error.HTTPError as err:
            detail = json.loads(err.read() or b"{}").get("value", {})
            raise RuntimeError(f"WebDriver {method} {path}: {detail.get('error')}: "
                               f"{str(detail.get('message', '')).splitlines()[0:1]}") from err

    def open(self, page: Path) -> None:
        self._call("POST", f"/session/{self.session}/url", {"url": Path(page).resolve().as_uri()})

    def run(self, script: str, asynchronous: bool = False) -> Any:
        kind = "async" if asynchronous else "sync"
        return self._call("POST", f"/session/{self.session}/execute/{kind}", {"script": script, "args": []})

    def media(self) -> dict[str, Any]:
        """What the page loaded: ``{"audio": [...], "images": [...], "variants": [...]}`` (see MEDIA_SCRIPT)."""
        return self.run(MEDIA_SCRIPT, asynchronous=True)

    def screenshot(self, out: Path, width: int = 1400, max_height: int = 12000) -> Path:
        """A PNG of the whole page (the window grown to the page's height, up to ``max_height``)."""
        height = int(self.run("return Math.ceil(document.documentElement.scrollHeight);"))
        self._call("POST", f"/session/{self.session}/goog/cdp/execute",
                   {"cmd": "Emulation.setDeviceMetricsOverride",
                    "params": {"width": width, "height": min(height, max_height), "deviceScaleFactor": 1,
                               "mobile": False}})
        png = base64.b64decode(self._call("GET", f"/session/{self.session}/screenshot"))
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(png)
        return out

    def close(self) -> None:
        try:
            if getattr(self, "session", None):
                self._call("DELETE", f"/session/{self.session}")
        except (OSError, RuntimeError):
            pass
        finally:
            self.driver.terminate()
            try:
                self.driver.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.driver.kill()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
