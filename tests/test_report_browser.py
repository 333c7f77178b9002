"""report.html in a real browser: headless Chromium, driven over the DevTools protocol on a pipe.

Chromium (Debian's ``chromium`` package; ``make test`` installs it where it can) opens the report with every network
name unresolvable, at a desktop and a phone width; the test checks the title, that every image loaded
with a non-zero size, that nothing logged an error, and that the phone-width page needs no sideways
scrolling. The screenshots go to ``$CNNLAB_SCREENSHOTS`` when it is set (to look at them).

Driving it needs nothing but the standard library: ``--remote-debugging-pipe`` speaks the protocol as
NUL-terminated JSON on file descriptors 3 (commands in) and 4 (replies and events out).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from cnnlab.inspect import write_report
from cnnlab.train import TrainConfig, train

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
TIMEOUT_S = 30.0


def find_chromium() -> str:
    """The Chromium executable, or a failure saying how to install it (this test never skips)."""
    for name in (os.environ.get("CNNLAB_CHROMIUM", ""), *BROWSERS):
        if name and (found := shutil.which(name)):
            return found
    pytest.fail(
        "Chromium is needed for the browser test and was not found: install it with "
        "`apt-get install -y chromium` (`make test` does this where it may) or set CNNLAB_CHROMIUM to its path"
    )


class Browser:
    """Headless Chromium on the DevTools protocol over a pipe: commands, replies and events."""

    def __init__(self, executable: str, profile: Path) -> None:
        commands_r, self.commands_w = os.pipe()
        self.events_r, events_w = os.pipe()
        # the child must find them as fds 3 and 4: park them above 10 so the dup2 below cannot clobber one
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (commands_r, events_w)]

        def as_fds_3_and_4() -> None:
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.process = subprocess.Popen(
            [
                executable,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--remote-debugging-pipe",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                "--host-resolver-rules=MAP * ~NOTFOUND",
                "about:blank",
            ],  # fmt: skip
            preexec_fn=as_fds_3_and_4,
            close_fds=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for fd in (commands_r, events_w, *high):
            os.close(fd)
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict] = []

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self.buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self.events_r, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed its DevTools pipe (did it start?)")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send one command and return its result (events that arrive meanwhile are kept)."""
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.commands_w, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        """The first event ``method`` not yet consumed (waiting for it if need be)."""
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events.pop(i)
            self.events.append(self._read_message(deadline))

    def close(self) -> None:
        """Close the browser (and kill it if it does not go)."""
        try:
            self.send("Browser.close")
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self.commands_w)
        os.close(self.events_r)


PAGE_STATE = """JSON.stringify({
  title: document.title,
  images: Array.from(document.images).map(i => ({complete: i.complete, width: i.naturalWidth, alt: i.alt})),
  scrollWidth: document.documentElement.scrollWidth,
  innerWidth: window.innerWidth,
  scripts: document.scripts.length,
  external: Array.from(document.querySelectorAll('[src],[href]'))
      .map(e => e.getAttribute('src') || e.getAttribute('href'))
      .filter(u => !u.startsWith('data:') && !u.startsWith('#')),
})"""


def render(browser: Browser, page: Path, width: int, height: int) -> tuple[dict, bytes, list[str]]:
    """Open ``page`` at ``width`` x ``height``: its state, a full-page screenshot, and the errors logged."""
    target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime", "Log"):
        browser.send(f"{domain}.enable", session=session)
    browser.send(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
        session=session,
    )
    browser.events.clear()
    browser.send("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
    browser.wait_for("Page.loadEventFired")
    state = json.loads(
        browser.send("Runtime.evaluate", {"expression": PAGE_STATE, "returnByValue": True}, session=session)[
            "result"
        ]["value"]
    )
    size = browser.send("Page.getLayoutMetrics", session=session)["cssContentSize"]
    shot = browser.send(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": min(size["height"], 16000), "scale": 1},
        },
        session=session,
    )
    errors = []
    for event in browser.events:
        params = event.get("params", {})
        if event.get("method") == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append(f"console.{params['type']}: {params.get('args')}")
        elif event.get("method") == "Runtime.exceptionThrown":
            errors.append(f"exception: {params.get('exceptionDetails', {}).get('text')}")
        elif event.get("method") == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            errors.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")
    browser.send("Target.closeTarget", {"targetId": target})
    return state, base64.b64decode(shot["data"]), errors


@pytest.fixture(scope="module")
def two_run_report(tiny_short_test, tiny_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """report.html of two tiny runs (so the side-by-side part is there too)."""
    root = tmp_path_factory.mktemp("report")
    for seed in (0, 1):
        cfg = TrainConfig(
            model="lecture-simple", epochs=2, batch_size=64, eval_batch_size=256, lr=0.05, threads=1, seed=seed,
            data_dir=str(tiny_dataset_dir), max_steps_per_epoch=2,  # half-trained: it makes mistakes to show
        )  # fmt: skip
        train(cfg, root / f"seed{seed}", data=tiny_short_test, progress=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNNLAB_NO_VERIFY", "1")  # the generated dataset has no official checksums
        return write_report([root / "seed0", root / "seed1"], root / "report.html")


@pytest.mark.parametrize(("label", "width", "height"), [("desktop", 1280, 900), ("phone", 390, 844)])
def test_report_renders_in_chromium(
    two_run_report: Path, tmp_path: Path, label: str, width: int, height: int
) -> None:
    browser = Browser(find_chromium(), tmp_path / "profile")
    try:
        state, png, errors = render(browser, two_run_report, width, height)
    finally:
        browser.close()
    assert state["title"] == "cnnlab report: 2 runs compared"
    alts = [i["alt"] for i in state["images"]]
    assert sum("per epoch, one line per run" in a for a in alts) == 4  # val/train accuracy and loss, overlaid
    for figure in ("loss and accuracy per epoch", "first-layer filters"):
        assert sum(a.startswith(figure) for a in alts) == (4 if figure.startswith("loss") else 2), figure
    assert sum(" taken for a " in a for a in alts) >= 2  # the mistakes' grid
    assert all(i["complete"] and i["width"] > 0 for i in state["images"]), [
        i["alt"] for i in state["images"] if not (i["complete"] and i["width"] > 0)
    ]
    assert errors == []
    assert state["external"] == [] and state["scripts"] == 0  # self-contained: nothing fetched, nothing run
    # readable at the phone's width: the page itself never needs sideways scrolling (wide tables scroll
    # inside their own box)
    assert state["scrollWidth"] <= state["innerWidth"], (state["scrollWidth"], state["innerWidth"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    if os.environ.get("CNNLAB_SCREENSHOTS"):
        folder = Path(os.environ["CNNLAB_SCREENSHOTS"])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"report-{label}.png").write_bytes(png)
