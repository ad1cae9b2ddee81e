"""The search page as a user gets it: index samples/ with the README's command, `snappy serve` it,
open the page in headless Chromium, time how soon results paint, and take the docs' screenshots.

    python benchmarks/bench_ui.py [--index DIR] [--queries 10] [--shots docs/img]

Times come from the page itself (``window.snappyTimings``: milliseconds from pressing Enter to the
JSON answer, to the result cards in the DOM, and to the first page image decoded), on a warm
service (one query first), 5 result pages, median and worst of ``--queries`` runs.
Needs Debian's chromium + chromium-driver and selenium (installed by scripts/setup.sh).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
QUERIES = ["zephyr turbine megawatts", "glacier retreat drone photogrammetry", "how much cardamom",
           "vaccine enrollment volunteers lisbon", "basalt columns argon isotopes"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def browser(width: int = 1280, height: int = 1000):
    from selenium import webdriver

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        opts.add_argument(a)
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path=shutil.which("chromedriver")), options=opts)


def wait(drv, script: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not drv.execute_script("return " + script):
        if time.monotonic() > deadline:
            raise TimeoutError(script)
        time.sleep(0.02)


def search(drv, query: str) -> dict:
    from selenium.webdriver.common.keys import Keys

    q = drv.find_element("id", "q")
    q.clear()
    q.send_keys(query, Keys.ENTER)
    wait(drv, "window.snappyTimings.firstImageMs != null || /match|error/i.test(document.getElementById('status').textContent)")
    return dict(drv.execute_script("return window.snappyTimings"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--index", default=None, help="an index to serve (default: index samples/ into a temp folder)")
    p.add_argument("--queries", type=int, default=10)
    p.add_argument("--shots", default=str(REPO / "docs" / "img"), help="folder for the screenshots ('' for none)")
    args = p.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}  # as a user's shell
    tmp = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    index = args.index or str(tmp / "idx")
    if args.index is None:
        t = time.perf_counter()
        subprocess.run([str(BIN / "snappy"), "index", "samples", "--index", index], cwd=REPO, env=env, check=True,
                       stdout=subprocess.DEVNULL)  # the README's command (PaddleOCR, lexical encoder)
        print(f"indexed samples/ in {time.perf_counter() - t:.0f} s")
    port = free_port()
    serve = subprocess.Popen([str(BIN / "snappy"), "serve", index, "--port", str(port)], cwd=REPO, env=env,
                             stdout=subprocess.DEVNULL, stderr=open(tmp / "serve.log", "wb"), start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    out: dict = {}
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if urllib.request.urlopen(f"{base}/healthz", timeout=2).status == 200:
                    break
            except Exception:
                pass
            if time.monotonic() > deadline or serve.poll() is not None:
                raise RuntimeError("snappy serve did not become healthy: " + (tmp / "serve.log").read_text()[-2000:])
            time.sleep(0.5)
        drv = browser()
        try:
            drv.get(f"{base}/?k=5")
            wait(drv, "document.readyState === 'complete'")
            search(drv, QUERIES[0])  # warm: encoder loaded, caches filled
            runs = [search(drv, QUERIES[i % len(QUERIES)]) for i in range(args.queries)]
            for key in ("responseMs", "renderedMs", "firstImageMs"):
                vals = [r[key] for r in runs if r.get(key) is not None]
                out[key] = {"median": round(statistics.median(vals), 1), "max": round(max(vals), 1), "n": len(vals)}
            out["pages_per_query"] = drv.execute_script("return document.querySelectorAll('article.result').length")
            if args.shots:
                shots = Path(args.shots)
                shots.mkdir(parents=True, exist_ok=True)
                drv.get(f"{base}/?q=zephyr+turbine+megawatts&k=3")
                wait(drv, "window.snappyTimings.firstImageMs != null")
                time.sleep(1)
                drv.save_screenshot(str(shots / "search.png"))
                drv.get(f"{base}/?q=zephyr+turbine+megawatts&k=2&level=line&threshold=p50&map=1")
                wait(drv, "document.querySelectorAll('canvas.heat').length > 0 && window.snappyTimings.firstImageMs != null")
                time.sleep(1)
                drv.save_screenshot(str(shots / "search-map.png"))
                drv.set_window_size(390, 844)
                drv.get(f"{base}/?q=how+much+cardamom&k=2")
                wait(drv, "window.snappyTimings.firstImageMs != null")
                time.sleep(1)
                drv.save_screenshot(str(shots / "search-phone.png"))
                drv.set_window_size(1280, 1000)
                drv.get(f"{base}/")
                drv.find_element("id", "index-toggle").click()
                wait(drv, "document.getElementById('index-panel').textContent.includes('Last runs')")
                drv.save_screenshot(str(shots / "search-index-panel.png"))
                out["screenshots"] = sorted(str(p.relative_to(REPO)) for p in shots.glob("search*.png"))
        finally:
            drv.quit()
    finally:
        serve.send_signal(signal.SIGINT)  # the CLI stops Serve and its Ray
        try:
            serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
