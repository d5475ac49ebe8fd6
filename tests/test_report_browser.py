"""The report page in a real browser: headless Chromium opens it offline with no error and no request out.

Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe: JSON
messages ending in NUL on fds 3 and 4), so no extra Python package is needed. The page
fails on any uncaught exception, console error, log entry of level error (this is where
"Failed to load resource" lands), failed load, or request to anything but the file itself
and data: URLs. A screenshot of the first screen and a PDF print are saved to reports/.

CI installs the browser with `apt-get install -y chromium`; without /usr/bin/chromium
these tests skip, saying so.
"""
import base64
import fcntl
import json
import os
import select
import subprocess
import time
from pathlib import Path

import pytest

from int4_lora_harness.report.page import build_report

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
         "--disable-component-update", "--disable-sync", "--disable-extensions", "--mute-audio",
         "--remote-debugging-pipe"]
TIMEOUT_S = 30.0
ARTIFACTS = Path(__file__).resolve().parents[1] / "reports"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason=f"{CHROMIUM} is absent: install it with `apt-get install -y chromium`")


class Browser:
    """Headless Chromium spoken to over --remote-debugging-pipe: send commands, collect every event."""

    def __init__(self, profile_dir):
        to_child, self._to_chrome = os.pipe()  # chrome reads commands on fd 3
        self._from_chrome, from_child = os.pipe()  # and writes replies and events on fd 4
        # Copies above fd 10, so that moving them to 3 and 4 in the child cannot clobber each other.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_child, from_child)]
        self.process = subprocess.Popen(
            [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile_dir}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, close_fds=False,
            preexec_fn=lambda: (os.dup2(high[0], 3), os.dup2(high[1], 4)))
        for fd in (to_child, from_child, *high):
            os.close(fd)
        self._buffer, self._next_id, self.events = b"", 0, []

    def _read_message(self, deadline):
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_chrome], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return None
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium closed the pipe; stderr: {self.process.stderr.read().decode()[-2000:]}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method, session=None, **params):
        """The result of one DevTools command; events seen meanwhile go to self.events."""
        self._next_id += 1
        message = dict(id=self._next_id, method=method, params=params, **({"sessionId": session} if session else {}))
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            reply = self._read_message(deadline)
            if reply is None:
                raise TimeoutError(f"no reply to {method} within {TIMEOUT_S} s")
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method} failed: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, event, seconds=TIMEOUT_S):
        deadline = time.monotonic() + seconds
        while not any(e.get("method") == event for e in self.events):
            message = self._read_message(deadline)
            if message is None:
                raise TimeoutError(f"no {event} within {seconds} s")
            self.events.append(message)

    def close(self):
        try:
            os.write(self._to_chrome, json.dumps(dict(id=0, method="Browser.close", params={})).encode() + b"\0")
            self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


def open_page(browser, path, width=1280, height=900):
    """Load `path` in a fresh tab; (session id, problems: every error, failed load or outside request)."""
    target = browser.send("Target.createTarget", url="about:blank")["targetId"]
    session = browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        browser.send(f"{domain}.enable", session)
    browser.send("Emulation.setDeviceMetricsOverride", session, width=width, height=height, deviceScaleFactor=1,
                 mobile=False)
    url = Path(path).resolve().as_uri()
    browser.send("Page.navigate", session, url=url)
    browser.wait_for("Page.loadEventFired")
    browser.send("Runtime.evaluate", session, expression="document.readyState")  # events before this are in
    return session, page_problems([e for e in browser.events if e.get("sessionId") == session], url)


def page_problems(events, url):
    """One line per console error, uncaught exception, failed load or request to anything but `url` / data:."""
    problems = []
    for e in events:
        method, params = e.get("method"), e.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            problems.append(f"uncaught: {details.get('exception', {}).get('description') or details.get('text')}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            problems.append(f"console.{params['type']}: {[a.get('value') for a in params.get('args', [])]}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            problems.append(f"log: {params['entry']['text']} {params['entry'].get('url', '')}")
        elif method == "Network.loadingFailed":
            problems.append(f"load failed: {params.get('errorText')} ({params.get('type')})")
        elif method == "Network.requestWillBeSent":
            requested = params["request"]["url"]
            if requested != url and not requested.startswith("data:"):
                problems.append(f"request out of the file: {requested}")
    return problems


@pytest.fixture
def browser(tmp_path):
    b = Browser(tmp_path / "chromium-profile")
    yield b
    b.close()


def write_inputs(folder):
    """Two verify runs (one failure with its repro, recorded samples) and two small benchmark runs on one device."""
    from test_report import write_bench, write_verdicts  # tests/ is on sys.path under pytest's rootdir
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "repro_bug.py").write_text("print('repro')\n")
    write_verdicts(folder, repro=str(folder / "repro_bug.py"))
    write_bench(folder)


def test_the_report_opens_offline_with_no_console_error_or_failed_load(tmp_path, browser):
    write_inputs(tmp_path / "reports")
    page = build_report(tmp_path / "reports")
    session, problems = open_page(browser, page)
    assert problems == []
    sections = browser.send("Runtime.evaluate", session, returnByValue=True, expression=(
        "[...document.querySelectorAll('section')].map(s => [s.id, s.querySelectorAll('svg').length])"))
    assert dict(sections["result"]["value"]) == dict(summary=0, verification=0, error=1, performance=4, memory=1,
                                                     comparison=0, realweights=0)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = browser.send("Page.captureScreenshot", session, format="png")
    (ARTIFACTS / "report_screenshot.png").write_bytes(base64.b64decode(shot["data"]))
    pdf = base64.b64decode(browser.send("Page.printToPDF", session, printBackground=True)["data"])
    assert pdf.startswith(b"%PDF") and len(pdf) > 10_000  # printable: Chromium lays it out on pages
    (ARTIFACTS / "report_print.pdf").write_bytes(pdf)


def test_the_report_with_no_inputs_also_opens_cleanly(tmp_path, browser):
    page = build_report(tmp_path / "empty")
    _, problems = open_page(browser, page)
    assert problems == []


def test_the_checker_catches_a_script_error_and_a_missing_image(tmp_path, browser):
    """The browser test has teeth: the problems it looks for are seen when they are there."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body><img src='missing.png'>"
                    "<script>console.error('logged'); undefined_function();</script></body></html>")
    _, problems = open_page(browser, page)
    text = "\n".join(problems)
    assert "undefined_function" in text
    assert "console.error: ['logged']" in text
    assert "ERR_FILE_NOT_FOUND" in text
