"""The web page (``GET /``) in a real headless Chromium against real ``resnet-serve`` processes.

Selenium drives Debian's ``chromium`` through its ``chromedriver`` (nothing is downloaded); without them the
browser tests skip with the reason. The page shows what ``POST /predict`` answers for the same image (chosen,
dropped or pasted), the service's own error text, and works behind ``--api-key`` once the key is typed in. With
``RESNET_SERVE_UPDATE_SCREENSHOT=1`` the screenshot of a result also replaces ``docs/web-page.png``.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serve_helpers import REPO, ServerProcess

from app.routes.page import CONTENT_SECURITY_POLICY
from models import read_golden

SHIPPED = REPO / "weights" / "resnet20-fashion-mnist.safetensors"
MODEL = "resnet20-fashion-mnist"
KEY = "page-key"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SCREENSHOT = REPO / "docs" / "web-page.png"
WAIT_S = 30
RENDERED_JS = """
return document.getElementById("result").hidden ? [] : [...document.querySelectorAll("#predictions li")].map(
  (li) => [li.querySelector(".label").textContent, li.querySelector(".score").textContent])
"""


@pytest.fixture(scope="module")
def servers(start_server) -> dict[str, ServerProcess]:
    """The shipped model served twice: ``open`` without a key, ``keyed`` with ``--api-key``."""
    args = ["--weights-dir", str(SHIPPED.parent), "--torch-threads", "1"]
    started = {"open": start_server(args), "keyed": start_server([*args, "--api-key", KEY])}
    for server in started.values():
        server.wait_ready(timeout=240)  # two servers starting at once on a shared machine
    return started


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """Headless Chromium, 1000x700, through the system chromedriver."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): apt-get install them")
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,700"):
        options.add_argument(arg)
    for arg in ("--no-first-run", "--disable-background-networking", "--disable-component-update"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console: CSP violations show there
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Fashion-MNIST test image (PNG) from the checkpoint's golden set: one the model gets right, not too sure of
    itself (several score bars to see)."""
    golden = read_golden(SHIPPED)
    assert golden is not None
    top, best = golden.probs.max(dim=1)
    candidates = [i for i, t in enumerate(golden.targets) if best[i] == t and 0.5 < top[i] < 0.85]
    path = tmp_path_factory.mktemp("images") / "fashion.png"
    path.write_bytes(golden.images[candidates[0] if candidates else 0])
    return path


def wait(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S).until(lambda d: condition(d), message=what)


def by_id(driver, element_id: str):
    return driver.find_element("id", element_id)


def open_page(driver, server: ServerProcess) -> None:
    driver.get(server.url + "/")
    driver.execute_script("sessionStorage.clear()")
    driver.refresh()


def rendered(driver) -> list[list[str]]:
    """[label, percentage] of each rendered prediction once the result is shown (read in one script: no stale
    elements while the page replaces them)."""
    return driver.execute_script(RENDERED_JS)


def error_text(driver) -> str:
    return driver.execute_script("const e = document.getElementById('error'); return e.hidden ? '' : e.textContent")


def upload(driver, path: Path) -> None:
    by_id(driver, "file").send_keys(str(path))


def test_the_page_is_static_served_without_the_key_under_a_strict_policy(servers: dict[str, ServerProcess]) -> None:
    keyed = servers["keyed"]
    page = keyed.get("/")
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY and "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert page.headers["x-content-type-options"] == "nosniff"
    assert '<input id="file"' in page.text and "/static/page.js" in page.text
    for name, content_type in (("page.js", "text/javascript"), ("page.css", "text/css")):
        r = keyed.get(f"/static/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(content_type)
        assert r.headers["cache-control"] == "no-cache" and r.headers["x-content-type-options"] == "nosniff"
        assert keyed.get(f"/static/{name}", headers={"If-None-Match": r.headers["etag"]}).status_code == 304
    for path in ("/static/../main.py", "/static/main.py", "/static/%2e%2e%2fmain.py", "/static/"):
        assert keyed.get(path).status_code == 404, path
    assert keyed.get("/models").status_code == 401  # the API stays behind the key
    assert "innerHTML" not in keyed.get("/static/page.js").text
    assert "/" not in keyed.get("/openapi.json").json()["paths"]


def test_an_uploaded_image_shows_the_same_labels_as_the_api(
    servers: dict[str, ServerProcess], browser, image: Path, tmp_path: Path
) -> None:
    server = servers["open"]
    open_page(browser, server)
    wait(browser, lambda d: by_id(d, "model").get_attribute("data-loaded") == "true", "the model list")
    assert by_id(browser, "model").get_attribute("value") == MODEL
    assert error_text(browser) == ""

    upload(browser, image)
    shown = wait(browser, rendered, "the predictions")
    expected = httpx.post(
        f"{server.url}/predict", params={"model": MODEL, "top_k": 5}, files={"file": ("x.png", image.read_bytes())}
    ).json()["predictions"]
    assert [label for label, _ in shown] == [p["label"] for p in expected]
    for (_, percent), p in zip(shown, expected, strict=True):
        assert percent.endswith("%") and float(percent[:-1]) == pytest.approx(p["score"] * 100, abs=0.051)
    widths = [bar.get_attribute("style") for bar in browser.find_elements("css selector", "#predictions .fill")]
    assert len(widths) == 5 and all(re.fullmatch(r"width: [\d.]+%;", w) for w in widths)
    assert re.fullmatch(r"\d+ ms", by_id(browser, "latency").text)
    assert MODEL in by_id(browser, "answered-by").text
    assert by_id(browser, "preview").is_displayed()
    console = [entry["message"] for entry in browser.get_log("browser")]
    assert not [m for m in console if "Content Security Policy" in m], console

    path = tmp_path / "web-page.png"
    assert browser.save_screenshot(str(path))
    if os.environ.get("RESNET_SERVE_UPDATE_SCREENSHOT") == "1":
        shutil.copy(path, SCREENSHOT)

    top_k = by_id(browser, "top-k")
    top_k.clear()
    top_k.send_keys("2\t")  # a change: classified again
    wait(browser, lambda d: len(rendered(d)) == 2, "two predictions")


def test_a_corrupt_file_shows_the_service_s_error(servers: dict[str, ServerProcess], browser, tmp_path: Path) -> None:
    server = servers["open"]
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not an image")
    answer = httpx.post(f"{server.url}/predict", files={"file": ("corrupt.png", corrupt.read_bytes(), "image/png")})
    assert answer.status_code == 400
    open_page(browser, server)
    wait(browser, lambda d: by_id(d, "model").get_attribute("data-loaded") == "true", "the model list")
    upload(browser, corrupt)
    assert wait(browser, error_text, "the error") == f"400: {answer.json()['detail']}"
    assert rendered(browser) == []


def test_behind_an_api_key_the_page_asks_for_it_and_then_classifies(
    servers: dict[str, ServerProcess], browser, image: Path
) -> None:
    server = servers["keyed"]
    open_page(browser, server)
    assert "API key" in wait(browser, error_text, "the request for a key")
    key = by_id(browser, "api-key")
    key.send_keys(KEY + "\t")  # a change: the models are asked for again, with the key
    wait(browser, lambda d: by_id(d, "model").get_attribute("data-loaded") == "true", "the model list")
    assert error_text(browser) == ""
    upload(browser, image)
    assert wait(browser, rendered, "the predictions")
    assert browser.execute_script("return sessionStorage.getItem('resnet-serve-api-key')") == KEY
    assert KEY not in browser.current_url

    key.clear()
    key.send_keys("wrong\t")
    assert "API key" in wait(browser, error_text, "the request for a key")
    upload(browser, image)
    wait(browser, lambda d: error_text(d).startswith("401: "), "the 401")


DROP_OR_PASTE_JS = """
const [how, b64, name] = arguments;
const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
const transfer = new DataTransfer();
transfer.items.add(new File([bytes], name, {type: "image/png"}));
if (how === "drop") {
  document.getElementById("drop").dispatchEvent(
    new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
} else {
  document.dispatchEvent(new ClipboardEvent("paste", {clipboardData: transfer, bubbles: true, cancelable: true}));
}
"""


def test_a_dropped_and_a_pasted_image_are_classified(servers: dict[str, ServerProcess], browser) -> None:
    """The browser's own drop and paste events, carrying a real file, as a drag from the desktop or Ctrl+V would."""
    server = servers["open"]
    golden = read_golden(SHIPPED)
    assert golden is not None
    answers = [
        httpx.post(f"{server.url}/predict", files={"file": ("x.png", golden.images[i])}).json()["predictions"]
        for i in range(32)
    ]
    # Two images whose top-5 labels differ, so the second result cannot be the first one left on the page.
    first = 0
    second = next(i for i, a in enumerate(answers) if [p["label"] for p in a] != [p["label"] for p in answers[0]])
    open_page(browser, server)
    wait(browser, lambda d: by_id(d, "model").get_attribute("data-loaded") == "true", "the model list")
    for how, index in (("drop", first), ("paste", second)):
        labels = [p["label"] for p in answers[index]]
        payload = base64.b64encode(golden.images[index]).decode()
        browser.execute_script(DROP_OR_PASTE_JS, how, payload, f"{how}.png")
        wait(
            browser,
            lambda d, labels=labels: [label for label, _ in rendered(d)] == labels,
            f"the labels after the {how}",
        )
        assert error_text(browser) == ""
