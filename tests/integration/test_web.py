"""The operators' web page in a real headless Chromium (Debian's, driven by Playwright) against the session's
service: it loads with no console errors, an upload shows a score and the heatmap, feedback changes the
rates, the threshold slider previews rates and applies with an admin key, the simulator runs a folder to
the end, and API errors reach the operator as messages. Screenshots go to a temporary folder and are
checked for size and content."""

from __future__ import annotations

import base64
import io
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.integration.conftest import CLASSIFIER_LINE, LINES, SENSOR_LINE, Keys, Service

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
VIEWPORT = {"width": 1280, "height": 1000}
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (`make test` installs it as root)"
)
playwright_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield chromium
        chromium.close()


class Page:
    """A fresh browser context (no stored key) with the console's errors collected."""

    def __init__(self, browser: Any, service: Service, shots: Path) -> None:
        self.context = browser.new_context(viewport=VIEWPORT)
        self.page = self.context.new_page()
        self.page.set_default_timeout(30_000)
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.url = service.url
        self.shots = shots

    def open(self, fragment: str = "") -> Any:
        self.page.goto(f"{self.url}/{fragment}")
        return self.page

    def shot(self, name: str) -> Image.Image:
        path = self.shots / f"{name}.png"
        self.page.evaluate("window.scrollTo(0, 0)")
        self.page.screenshot(path=str(path), full_page=False)
        image = Image.open(path)
        image.load()
        return image


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture
def web(browser: Any, service: Service, shots: Path) -> Iterator[Page]:
    page = Page(browser, service, shots)
    yield page
    page.context.close()


def check_screenshot(image: Image.Image) -> np.ndarray:
    """A full viewport, not blank, with the page's dark header across the top."""
    assert image.size == (VIEWPORT["width"], VIEWPORT["height"])
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    assert pixels.std() > 20, "the screenshot is (nearly) one colour"
    assert pixels[:8].mean() < 80, "the dark header bar is missing"
    return pixels


def colourful(image: Image.Image) -> float:
    """Share of pixels with a strong colour (the heatmap; the synthetic parts themselves are grey)."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    return float(((rgb.max(axis=2) - rgb.min(axis=2)) > 80).mean())


def test_page_and_sample_routes(service: Service) -> None:
    """The page and its assets are plain files (no key needed); the sample routes stay inside their folder."""
    with service.client() as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<script src="/ui/app.js"' in page.text and "http" not in page.text.split("<body>")[0]  # no CDN
        assert client.get("/ui/app.js").headers["content-type"].startswith("text/javascript")
        assert client.get("/ui/style.css").status_code == 200
        assert client.get("/ui/secrets.txt").status_code == 404
        folders = client.get("/v1/samples").json()
        folder = f"{service.data.parent.name}/{service.data.name}"
        assert [f["id"] for f in folders["folders"]] == [folder]
        images = client.get("/v1/samples/images", params={"folder": folder}).json()["images"]
        first = images[0]
        image = client.get("/v1/samples/image", params={"folder": folder, "path": first["path"]})
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert image.content == (service.data / first["path"]).read_bytes()
        for path in ("../../../../etc/passwd", "train/good/000.png", "/etc/passwd", "test/good/000.png\x00"):
            refused = client.get("/v1/samples/image", params={"folder": folder, "path": path})
            assert refused.status_code == 404 and "not a test image" in refused.json()["detail"], path
        for other in ("elsewhere/surface", f"{folder}/../..", ""):
            refused = client.get("/v1/samples/images", params={"folder": other})
            assert refused.status_code in (404, 422), other


def test_overview_loads_without_console_errors(web: Page) -> None:
    page = web.open()
    page.wait_for_selector("#lines-table tbody tr[data-line]")
    lines = page.locator("#lines-table tbody tr[data-line]")
    shown = {lines.nth(i).get_attribute("data-line") for i in range(lines.count())}
    listed = httpx.get(f"{web.url}/v1/lines", timeout=30).json()  # other tests may have added lines
    assert shown == {line["line"] for line in listed} >= {*LINES, SENSOR_LINE, CLASSIFIER_LINE}
    # every line's figures arrive (stats and drift), none left waiting or failed
    page.wait_for_function("![...document.querySelectorAll('#lines-table td')].some(td => td.textContent === '…')")
    row = page.locator(f"#lines-table tr[data-line='{LINES[0]}'] td")
    assert row.nth(1).inner_text() == "image-anomaly"
    assert row.nth(9).locator(".badge").get_attribute("data-status") in {"ok", "warning", "drift", "insufficient_data"}
    check_screenshot(web.shot("overview"))
    page.get_by_role("link", name=LINES[0], exact=True).click()
    page.wait_for_selector("#threshold-slider")
    page.click("[data-nav=simulator]")
    page.wait_for_selector("#sim-folder option", state="attached")
    assert web.errors == []


def choose_file(page: Any, path: Path) -> None:
    """Choose a file as an operator does: once the image input is shown (the line's kind is known and the
    input listens); setting the file before that would be a change nobody hears."""
    page.wait_for_selector("#image-input:not([hidden])")
    page.set_input_files("#file", str(path))


def test_upload_shows_score_and_heatmap(web: Page, service: Service) -> None:
    page = web.open(f"#/line/{LINES[0]}")
    defective = sorted((service.data / "test" / "scratch").iterdir())[0]
    choose_file(page, defective)
    page.wait_for_selector("#result:not([hidden])")
    decision = page.locator("#decision")
    assert decision.inner_text() in {"OK", "NG"}
    assert re.search(r"score [\d.e+-]+ against threshold [\d.e+-]+", page.inner_text("#result-text"))
    assert float(decision.get_attribute("data-score") or "nan") > 0
    page.wait_for_function("document.querySelector('#overlay').naturalWidth > 0")
    overlay = Image.open(io.BytesIO(page.locator("#overlay").screenshot()))
    part = Image.open(io.BytesIO(page.locator("#picture").screenshot()))
    assert overlay.size[0] >= 200 and part.size == overlay.size
    assert colourful(overlay) > 0.05 > colourful(part) + 0.01, "the heatmap colours the part"
    # the answer is the newest in the latest answers, with feedback buttons
    page.wait_for_selector("#history-table tbody tr[data-id] button[data-label=ng]")
    check_screenshot(web.shot("upload"))
    assert web.errors == []


def drop(page: Any, selector: str, path: Path) -> None:
    """Drop a file on an element: a real DragEvent carrying a DataTransfer with the file."""
    page.evaluate(
        """([selector, b64, name]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const data = new DataTransfer();
            data.items.add(new File([bytes], name, { type: "image/png" }));
            const event = new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true });
            document.querySelector(selector).dispatchEvent(event);
        }""",
        [selector, base64.b64encode(path.read_bytes()).decode(), path.name],
    )


def _text(page: Any, selector: str) -> str:
    return str(page.locator(selector).inner_text())


def test_feedback_changes_the_rates(web: Page, service: Service) -> None:
    line = LINES[1]
    page = web.open(f"#/line/{line}")
    good = sorted((service.data / "test" / "good").iterdir())[0]
    page.wait_for_selector("#image-input:not([hidden])")
    drop(page, "#drop", good)  # dropped on the page, as an operator drags a file from the desktop
    page.wait_for_selector("#result:not([hidden])")
    answered_ng = page.inner_text("#decision") == "NG"
    prediction_id = page.get_attribute("#decision", "data-prediction-id")
    ours = page.locator(f"#history-table tbody tr[data-id='{prediction_id}']")  # in the latest answers
    ours.locator("button").first.wait_for()
    page.wait_for_selector("#rates-table tbody tr[data-source=feedback]")
    labelled = int(_text(page, "#stat-labelled .value"))
    before = {k: _text(page, f"#stat-{k}") for k in ("miss", "over")}
    feedback_before = _text(page, "#rates-table tr[data-source=feedback]")
    # the operator disagrees: an NG answer was a good part (over-detection), an OK one a defect (miss)
    ours.locator("button[data-label=ok]" if answered_ng else "button[data-label=ng]").click()
    page.wait_for_function(
        f"document.querySelector('#stat-labelled .value').textContent === '{labelled + 1}'", timeout=30_000
    )
    page.wait_for_function(
        "([sel, old]) => document.querySelector(sel).innerText !== old",
        arg=["#rates-table tr[data-source=feedback]", feedback_before],
    )
    changed = "over" if answered_ng else "miss"
    after = {k: _text(page, f"#stat-{k}") for k in ("miss", "over")}
    assert after[changed] != before[changed], (before, after)
    stats = httpx.get(f"{service.url}/v1/lines/{line}/stats", params={"window": "24h"}, timeout=30).json()
    rate = stats["confusion"][f"{'over_detection' if answered_ng else 'miss'}_rate"]
    assert after[changed].startswith(f"{100 * rate:.1f}%")
    verdict = page.locator(f"#history-table tr[data-id='{prediction_id}'] td[data-verdict]")
    assert verdict.inner_text() == ("ok" if answered_ng else "ng")
    check_screenshot(web.shot("feedback"))
    assert web.errors == []


def test_threshold_slider_previews_rates(web: Page, service: Service) -> None:
    part = sorted((service.data / "test" / "good").iterdir())[1]
    scored = httpx.post(f"{service.url}/v1/lines/{LINES[0]}/predict", files={"file": part.read_bytes()}, timeout=60)
    assert scored.status_code == 200  # at least one answer in the histogram
    page = web.open(f"#/line/{LINES[0]}")
    page.wait_for_selector("#rates-table tbody tr[data-source=calibration]")
    slider = page.locator("#threshold-slider")
    calibration = "#rates-table tr[data-source=calibration] td"  # the fit's held-out good parts
    assert re.fullmatch(r"0 ng / \d+ ok", page.locator(calibration).nth(1).inner_text())
    slider.focus()
    page.keyboard.press("End")  # above every score: nothing flagged
    page.wait_for_function(f"document.querySelectorAll('{calibration}')[3].textContent.startsWith('0.0%')")
    assert page.locator("#histogram [data-mark=candidate]").count() == 1
    page.keyboard.press("Home")  # below every score: everything flagged
    page.wait_for_function(f"document.querySelectorAll('{calibration}')[3].textContent.startsWith('100.0%')")
    assert "(now " in page.locator(calibration).nth(3).inner_text()  # beside the current threshold's rate
    page.wait_for_selector("#histogram rect", state="attached")
    check_screenshot(web.shot("threshold"))
    assert web.errors == []


def test_classifier_and_sensor_lines(web: Page, service: Service) -> None:
    """A classifier line answers a class with its probabilities and takes a class as the verdict; a sensor
    line takes a typed reading and names the features behind its score."""
    page = web.open(f"#/line/{CLASSIFIER_LINE}")
    part = sorted((service.class_data / "scratch").iterdir())[0]
    choose_file(page, part)
    page.wait_for_selector("#result:not([hidden])")
    classes = httpx.get(f"{service.url}/v1/lines/{CLASSIFIER_LINE}", timeout=30).json()["classes"]
    assert page.inner_text("#decision") in classes
    assert page.locator("#result-detail tr").count() == len(classes)  # a probability per class
    assert page.locator("#overlay").is_hidden()  # a classifier has no heatmap
    newest = page.locator("#history-table tbody tr[data-id]").first
    newest.wait_for()
    options = newest.locator("select option")
    assert [options.nth(i).inner_text() for i in range(options.count())] == classes

    page = web.open(f"#/line/{SENSOR_LINE}")
    page.wait_for_selector("#sensor-input:not([hidden])")
    assert "12 numbers" in page.inner_text("#vector-help")
    page.fill("#vector", " ".join(["1000"] * 12))  # far from the normal readings
    page.click("#sensor-input button")
    page.wait_for_selector("#result:not([hidden])")
    assert page.inner_text("#decision") == "NG"
    assert page.locator("#result-detail tr").count() > 1  # the features behind the score
    page.wait_for_selector("#stat-alarms")  # a sensor line counts its streams' alarm events
    assert "ended" in page.inner_text("#stat-alarms")
    assert web.errors == []


def test_simulator_runs_a_folder_to_the_end(web: Page, service: Service) -> None:
    folder = f"{service.data.parent.name}/{service.data.name}"
    page = web.open(f"#/simulator?folder={folder}&line={LINES[0]}")
    page.wait_for_selector(f"#sim-folder option[value='{folder}']", state="attached")
    assert page.locator("#sim-folder").input_value() == folder
    started = time.perf_counter()
    page.click("#sim-run")
    page.wait_for_selector("#sim-progress[data-done=true]", timeout=180_000)
    elapsed = time.perf_counter() - started
    rows = page.locator("#sim-table tbody tr")
    n_images = sum(1 for p in (service.data / "test").rglob("*.png"))
    assert rows.count() == n_images == int(_text(page, "#sim-parts .value"))
    assert _text(page, "#sim-progress").startswith(f"{n_images} / {n_images} parts")
    order = [rows.nth(i).locator("td").nth(1).inner_text() for i in range(rows.count())]
    assert len(set(order)) == n_images and order != sorted(order)  # each image once, shuffled
    outcomes = [rows.nth(i).get_attribute("data-outcome") for i in range(rows.count())]
    truth = [rows.nth(i).locator("td").nth(2).inner_text() for i in range(rows.count())]
    defective = sum(t.startswith("ng") for t in truth)
    assert _text(page, "#sim-miss .label") == f"miss rate ({outcomes.count('miss')} of {defective} defective)"
    good = n_images - defective
    assert _text(page, "#sim-over .label") == f"over-detection ({outcomes.count('over')} of {good} good)"
    assert page.locator("#sim-histogram rect").count() > 0
    page.wait_for_function("document.querySelector('#sim-overlay').naturalWidth > 0")
    # the overlay is the last part's (the table's first row): a flagged part's shows its defect; a part
    # passed as good may show nothing, its normal regions left clear (1 of the 8 good parts here)
    if rows.nth(0).locator("td").nth(3).inner_text() == "ng":
        assert colourful(Image.open(io.BytesIO(page.locator("#sim-overlay").screenshot()))) > 0.05
    check_screenshot(web.shot("simulator"))
    missed, over = outcomes.count("miss"), outcomes.count("over")
    print(f"simulator: {n_images} parts on {LINES[0]} in {elapsed:.1f} s; {missed} missed, {over} over-detected")
    history = httpx.get(
        f"{service.url}/v1/lines/{LINES[0]}/history", params={"sensor_id": "simulator"}, timeout=30
    ).json()
    assert len(history["records"]) >= n_images
    assert web.errors == []


def test_api_errors_are_shown_to_the_operator(web: Page, service: Service, tmp_path: Path) -> None:
    page = web.open(f"#/line/{LINES[0]}")
    note = tmp_path / "note.txt"
    note.write_text("not a picture")
    choose_file(page, note)
    message = page.locator("#score-panel [data-msg]")
    message.wait_for(state="visible")
    assert re.match(r"Error 4\d\d: ", message.inner_text())
    assert "image" in message.inner_text().lower()

    page = web.open(f"#/line/{SENSOR_LINE}")
    page.fill("#vector", "1, 2, 3")
    page.click("#sensor-input button")
    message = page.locator("#score-panel [data-msg]")
    message.wait_for(state="visible")
    assert message.inner_text().startswith("Error 422: ") and "12" in message.inner_text()
    page.fill("#vector", ", ".join(["0.1"] * 12))
    page.click("#sensor-input button")
    page.wait_for_selector("#result:not([hidden]) #decision")
    assert message.is_hidden()

    page = web.open("#/line/no-such-line")
    alert = page.locator("#view [role=alert]")
    alert.wait_for()
    assert alert.inner_text().startswith("Error 404: unknown line 'no-such-line'")
    check_screenshot(web.shot("error"))


def apply_next_threshold(page: Any) -> None:
    """Once the rates are in, move the slider one step up and press Apply."""
    page.wait_for_selector("#rates-table tbody tr[data-source=calibration]")
    page.locator("#threshold-slider").focus()
    page.keyboard.press("ArrowRight")
    page.click("#threshold-apply")


def test_api_key_entry(web: Page, service: Service, api_keys: Keys) -> None:
    """With keys configured the page asks for one, shows what a key may not do, and applies a threshold
    with an admin key."""
    line = LINES[1]
    assert httpx.get(f"{service.url}/", timeout=10).status_code == 200  # the page itself needs no key
    assert httpx.get(f"{service.url}/ui/app.js", timeout=10).status_code == 200
    assert httpx.get(f"{service.url}/v1/samples", timeout=10).status_code == 401  # its data does
    page = web.open()
    dialog = page.locator("#key-dialog")
    dialog.wait_for(state="visible")
    assert "needs an API key" in page.inner_text("#key-reason")
    page.fill("#key-input", "lg_00000000_mistyped")
    page.click("#key-save")
    dialog.wait_for(state="visible")
    page.wait_for_function("document.querySelector('#key-reason').textContent.includes('not valid')")
    page.fill("#key-input", api_keys.reader)
    page.click("#key-save")
    page.wait_for_selector(f"#lines-table tr[data-line='{line}']")
    assert page.inner_text("#key-button").startswith("API key: lg_")

    page.goto(f"{service.url}/#/line/{line}")
    apply_next_threshold(page)
    refused = page.locator("#threshold-panel [data-msg]")
    refused.wait_for(state="visible")
    assert refused.inner_text().startswith("Error 403: ") and "admin" in refused.inner_text()
    check_screenshot(web.shot("forbidden"))

    before = httpx.get(f"{service.url}/v1/lines/{line}", headers={"X-API-Key": api_keys.admin}, timeout=30).json()
    drawn = page.query_selector("#view > .view")
    page.click("#key-button")
    page.fill("#key-input", api_keys.admin)
    page.click("#key-save")
    dialog.wait_for(state="hidden")
    page.wait_for_function("view => !view.isConnected", arg=drawn)  # the view is drawn again with the new key
    apply_next_threshold(page)
    done = page.locator("#threshold-done")
    done.wait_for(state="visible")
    after = before  # each ingress replica sees the new version within line_cache_ttl_s (1 s)
    deadline = time.monotonic() + 5
    while after["version"] == before["version"] and time.monotonic() < deadline:
        time.sleep(0.2)
        after = httpx.get(f"{service.url}/v1/lines/{line}", headers={"X-API-Key": api_keys.admin}, timeout=30).json()
    assert after["version"] != before["version"] and after["threshold"] != before["threshold"]
    assert f"version {after['version']} now serves" in done.inner_text()
    restore = httpx.put(
        f"{service.url}/v1/lines/{line}/threshold",
        json={"threshold": before["threshold"], "note": "restored after the web test"},
        headers={"X-API-Key": api_keys.admin},
        timeout=30,
    )
    assert restore.status_code == 200
    assert all("status of 401" in e or "status of 403" in e for e in web.errors), web.errors  # only the refusals
