"""The search page of `snappy serve`, in a real browser (headless Chromium from Debian, driven by
selenium + chromium-driver; skipped with the reason where either is missing).

One Ray Serve app on 127.0.0.1 over an index written by the test: ordinary pages, a page whose
region text and file name are HTML that would run if it were ever parsed, and a failed document.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import time
import urllib.error
import urllib.request

import pytest

from snappy.testing.synth_index import SynthDocSpec, SynthPageSpec, write_index
from test_serve import _deploy, _get, serve_base  # noqa: F401  (a fixture: Ray + Serve on 127.0.0.1)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
XSS_TEXT = 'invoice <img src=x onerror="window.__xss=1"> total <b>bold</b>'
XSS_URI = "mem://<script>window.__xss2=1</script>evil.pdf"


def corpus() -> list[SynthDocSpec]:
    docs = []
    for d in range(6):
        regions = [((40, 60 + 150 * r, 700, 120 + 150 * r), f"quarterly revenue report line {r} of document {d}")
                   for r in range(4)]
        regions.append(((40, 700, 500, 760), f"invoice total amount due {100 + d} euro"))
        docs.append(SynthDocSpec(f"mem://report-{d}.pdf", [SynthPageSpec((800, 1000), regions)]))
    docs.append(SynthDocSpec(XSS_URI, [SynthPageSpec((800, 1000), [((50, 100, 750, 160), XSS_TEXT),
                                                                  ((50, 300, 400, 340), "pension claim")])]))
    docs.append(SynthDocSpec("mem://broken.pdf", error="not a PDF (no %PDF header)"))
    return docs


@pytest.fixture(scope="module")
def app(serve_base, tmp_path_factory):  # noqa: F811
    from pipelines.serve import ServeConfig, build_app

    uri = str(tmp_path_factory.mktemp("ui") / "idx")
    write_index(uri, corpus())
    config = ServeConfig(index=uri, shards=2, refresh_s=1.0, router_num_cpus=0.25, shard_num_cpus=0.25)
    status, _ = _deploy(build_app(config), serve_base, "snappy-ui", "/")
    assert status == 200
    blank = str(tmp_path_factory.mktemp("ui-blank") / "idx")  # pages without text: nothing can match
    write_index(blank, [SynthDocSpec(f"mem://scan-{i}.pdf", [SynthPageSpec((800, 1000), [])]) for i in range(2)])
    status, _ = _deploy(build_app(ServeConfig(index=blank, router_num_cpus=0.25, shard_num_cpus=0.25)), serve_base,
                        "snappy-ui-blank", "/blank")
    assert status == 200
    damaged = str(tmp_path_factory.mktemp("ui-damaged") / "idx")
    write_index(damaged, corpus()[:2])
    os.remove(sorted(glob.glob(os.path.join(damaged, "regions.lance", "data", "*")))[0])  # one data file lost
    status, _ = _deploy(build_app(ServeConfig(index=damaged, router_num_cpus=0.25, shard_num_cpus=0.25)), serve_base,
                        "snappy-ui-damaged", "/damaged")
    assert status == 503
    return serve_base


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM or not DRIVER:
        pytest.skip("headless Chromium not installed (Debian: apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=opts)
    drv.set_page_load_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()


def wait(drv, script: str, timeout: float = 60, what: str = ""):
    """Poll a JS expression until it is truthy; its value."""
    deadline = time.monotonic() + timeout
    while True:
        v = drv.execute_script("return " + script)
        if v:
            return v
        assert time.monotonic() < deadline, f"timed out waiting for {what or script}"
        time.sleep(0.1)


def load(drv, url: str) -> None:
    drv.get(url)
    wait(drv, "document.readyState === 'complete'")


def results_or_status(drv) -> None:
    wait(drv, "document.querySelectorAll('article.result').length > 0 || "
              "(document.getElementById('status').textContent && !/Searching/.test(document.getElementById('status').textContent))",
         what="results or a status")


# ---------------------------------------------------------------------- HTTP, no browser
def test_page_headers_and_page_id_validation(app):
    with urllib.request.urlopen(f"{app}/", timeout=30) as r:
        html = r.read().decode()
        csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
    assert '<script src="ui/app.js">' in html and "http" not in html.split("<body>")[1]  # nothing external
    for bad in ("/pages/..%2F..%2Fx/image", "/pages/../../x/image", "/pages/abc/image", "/ui/../serve.py"):
        try:
            urllib.request.urlopen(f"{app}{bad}", timeout=30)
            raise AssertionError(f"{bad} answered 200")
        except urllib.error.HTTPError as e:
            assert 400 <= e.code < 500, (bad, e.code)
    status, body = _get(f"{app}/pages/0123456789abcdef-p00001/image")
    assert status == 404 and "no page" in body["error"]


def test_page_images_are_scaled_and_cached(app):
    from io import BytesIO

    from PIL import Image

    req = urllib.request.Request(f"{app}/query", data=json.dumps({"query": "invoice total", "top_pages": 1}).encode(),
                                 headers={"content-type": "application/json"})
    page = json.loads(urllib.request.urlopen(req, timeout=60).read())[0]
    for w, expect in ((400, 400), (4000, page["width"])):
        with urllib.request.urlopen(f"{app}/pages/{page['page_id']}/image?w={w}", timeout=30) as r:
            assert r.headers["Content-Type"] == "image/jpeg"
            im = Image.open(BytesIO(r.read()))
        assert im.width == expect and abs(im.height - round(expect * page["height"] / page["width"])) <= 1


# ---------------------------------------------------------------------- the browser
def test_search_from_the_url_draws_boxes_where_data_bbox_says(app, browser):
    load(browser, f"{app}/?q=invoice+total+amount&level=line&threshold=p50&k=3")
    wait(browser, "document.querySelectorAll('article.result img').length > 0 && "
                  "[...document.querySelectorAll('article.result img')].every(i => i.complete && i.naturalWidth > 0)",
         what="result images")
    assert browser.find_element("id", "q").get_attribute("value") == "invoice total amount"
    assert browser.find_element("id", "level").get_attribute("value") == "line"
    assert browser.find_element("id", "threshold").get_attribute("value") == "p50"
    geometry = browser.execute_script("""
      return [...document.querySelectorAll('article.result')].map(a => {
        const img = a.querySelector('img').getBoundingClientRect();
        const w = Number(a.querySelector('img').getAttribute('width')), h = Number(a.querySelector('img').getAttribute('height'));
        return [...a.querySelectorAll('.box')].map(b => {
          const r = b.getBoundingClientRect();
          return {bbox: b.dataset.bbox, id: b.dataset.regionId, img: [img.left, img.top, img.width, img.height], w, h,
                  rect: [r.left, r.top, r.right, r.bottom]};
        });
      });""")
    assert 1 <= len(geometry) <= 3 and sum(map(len, geometry)) >= 1
    for page in geometry:
        for b in page:
            x0, y0, x1, y1 = (float(v) for v in b["bbox"].split(","))
            left, top, width, height = b["img"]
            sx, sy = width / b["w"], height / b["h"]
            want = [left + x0 * sx, top + y0 * sy, left + x1 * sx, top + y1 * sy]
            assert all(abs(g - e) <= 1.5 for g, e in zip(b["rect"], want)), (b, want)
    # every drawn box has its row in the list, with the same id and box
    ids = browser.execute_script("return [...document.querySelectorAll('.box')].map(b => b.dataset.regionId)")
    rows = browser.execute_script("return [...document.querySelectorAll('ol.regions li')].map(li => li.dataset.regionId)")
    assert ids == rows
    timings = browser.execute_script("return window.snappyTimings")
    print(f"first image painted {timings['firstImageMs']:.0f} ms after the search started "
          f"(response {timings['responseMs']:.0f} ms)")


def test_hover_and_focus_highlight_the_box_and_its_row(app, browser):
    from selenium.webdriver.common.action_chains import ActionChains

    load(browser, f"{app}/?q=invoice+total&level=line&threshold=top1&k=2")
    results_or_status(browser)
    box = browser.find_element("css selector", "article.result .box")
    rid = box.get_attribute("data-region-id")
    ActionChains(browser).move_to_element(browser.find_element("css selector", f'li[data-region-id="{rid}"]')).perform()
    assert "hot" in box.get_attribute("class")
    ActionChains(browser).move_to_element(browser.find_element("id", "q")).perform()
    assert "hot" not in box.get_attribute("class")
    browser.execute_script(f"document.querySelector('li[data-region-id=\"{rid}\"]').focus()")  # keyboard focus
    assert "hot" in box.get_attribute("class")


def test_typing_a_query_and_enter_updates_the_url(app, browser):
    from selenium.webdriver.common.keys import Keys

    load(browser, f"{app}/")
    q = browser.find_element("id", "q")
    q.send_keys("pension claim", Keys.ENTER)
    results_or_status(browser)
    assert "q=pension+claim" in browser.current_url
    texts = browser.execute_script("return [...document.querySelectorAll('ol.regions .text')].map(t => t.textContent)")
    assert any("pension claim" in t for t in texts)


def test_similarity_map_toggle_and_one_map_per_token(app, browser):
    load(browser, f"{app}/?q=quarterly+revenue&k=2")
    results_or_status(browser)
    assert not browser.find_elements("css selector", "canvas.heat")
    browser.find_element("id", "map").click()  # searches again with the maps
    wait(browser, "document.querySelectorAll('canvas.heat').length > 0", what="the map")
    assert "map=1" in browser.current_url
    canvas = browser.find_element("css selector", "canvas.heat")
    assert float(canvas.get_attribute("data-max")) > 0 and canvas.get_attribute("data-token") == "-1"
    options = browser.execute_script("return [...document.querySelector('.tokens select').options].map(o => o.text)")
    assert options[0].startswith("all query tokens") and [o.split(": ", 1)[1] for o in options[1:]] == ["quarterly",
                                                                                                      "revenue"]
    browser.execute_script("const s = document.querySelector('.tokens select'); s.value = '1';"
                           "s.dispatchEvent(new Event('change'))")
    assert canvas.get_attribute("data-token") == "1"
    painted = browser.execute_script("""
      const c = document.querySelector('canvas.heat'); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n;""")
    assert painted > 0


@pytest.mark.parametrize("where, query, expect", [
    ("/", "", "Type a query"),
    ("/", "!!! ???", "cannot be searched"),
    ("/blank/", "invoice total", "no page matches"),  # the app mounted at a prefix: relative paths
    ("/damaged/", "invoice total", "The index is damaged (table regions, file "),
])
def test_errors_a_person_understands(app, browser, where, query, expect):
    from urllib.parse import quote_plus

    load(browser, f"{app}{where}?q={quote_plus(query)}" if query else f"{app}{where}")
    if not query:
        browser.find_element("css selector", "form button[type=submit]").click()
    wait(browser, "document.getElementById('status').textContent && "
                  "!/Searching/.test(document.getElementById('status').textContent)")
    status = browser.find_element("id", "status")
    assert expect in status.text and "error" in status.get_attribute("class")
    assert not browser.find_elements("css selector", "article.result")


def test_a_service_still_starting_is_said_so(app, browser):
    load(browser, f"{app}/")
    said = browser.execute_async_script(
        "const done = arguments[0]; explain(new Response(JSON.stringify({status: 'starting'}), {status: 503})).then(done)")
    assert "still starting" in said


def test_document_strings_are_text_never_markup(app, browser):
    load(browser, f"{app}/?q=invoice+total+bold&level=line&threshold=p50&k=10")
    results_or_status(browser)
    assert browser.execute_script("return window.__xss === undefined && window.__xss2 === undefined")
    assert not browser.find_elements("css selector", "ol.regions img, ol.regions b, article.result h2 script")
    texts = browser.execute_script("return [...document.querySelectorAll('ol.regions .text')].map(t => t.textContent)")
    assert XSS_TEXT in texts
    titles = browser.execute_script("return [...document.querySelectorAll('article.result h2')].map(t => t.textContent)")
    assert any("<script>" in t for t in titles)


def test_index_panel_lists_documents_runs_and_failures(app, browser):
    load(browser, f"{app}/")
    browser.find_element("id", "index-toggle").click()
    wait(browser, "document.getElementById('index-panel').textContent.includes('broken.pdf')", what="the index panel")
    text = browser.find_element("id", "index-panel").text
    assert "not a PDF (no %PDF header)" in text and "documents" in text and "pages" in text
    assert browser.find_element("id", "index-toggle").get_attribute("aria-expanded") == "true"


def test_phone_width_has_no_sideways_scroll(app, browser):
    browser.set_window_size(390, 844)
    try:
        load(browser, f"{app}/?q=invoice+total&k=3")
        results_or_status(browser)
        widths = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth, "
                                        "document.querySelector('article.result').getBoundingClientRect().width]")
        assert widths[0] <= widths[1] and widths[2] <= widths[1]
    finally:
        browser.set_window_size(1280, 1000)
