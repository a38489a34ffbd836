"""The web page as a visitor gets it: page weight and time to the first result, in headless Chromium.

Starts `heritage serve --port 0` (the shipped model unless --model), opens the page in Debian's headless
Chromium (Selenium), and measures
- page weight: the bytes of every response the page loads before any upload (HTML, /api/info, the class
  images), from the browser's Resource Timing (encoded body sizes);
- time to first result: from handing one photo to the file input to its result card being complete
  (answer, Grad-CAM, deconvnet), median of --repeats uploads after one warm-up; and the bytes of that answer.
The photo is bench_serve.py's drawn bell tower (480 x 640 JPEG), never a dataset photo.

    python benchmarks/bench_page.py [--model M] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench_serve import draw_bell_tower, start_server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint (default: the shipped model)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    from selenium import webdriver
    from selenium.webdriver.common.by import By

    url, process = start_server(args.model, [])
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path="/usr/bin/chromedriver"))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            photo = Path(tmp) / "bell_tower.jpg"
            draw_bell_tower().save(photo, format="JPEG", quality=90)
            driver.get(url)
            weight_script = (
                "return performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))"
                ".map(e => [e.name, e.encodedBodySize])"
            )
            deadline = time.monotonic() + 30
            while len(driver.find_elements(By.CSS_SELECTOR, "#classes img")) == 0 and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1.0)  # let the class images finish loading
            loaded = driver.execute_script(weight_script)
            seconds = []
            for attempt in range(args.repeats + 1):
                driver.execute_script("document.getElementById('results').replaceChildren()")
                started = time.perf_counter()
                driver.find_element(By.ID, "file").send_keys(str(photo))
                while not driver.execute_script(
                    "const c = document.querySelector('#results article');"
                    "return c && !c.classList.contains('pending') && [...c.querySelectorAll('img')]"
                    ".every(i => i.complete && i.naturalWidth > 0)"
                ):
                    time.sleep(0.005)
                if attempt:  # the first is a warm-up
                    seconds.append(time.perf_counter() - started)
            answer = [e for e in driver.execute_script(weight_script) if "/api/predict" in e[0]][-1][1]
    finally:
        driver.quit()
        process.terminate()
        process.wait(timeout=20)
    figures = {
        "page_bytes": sum(size for _, size in loaded),
        "page_requests": len(loaded),
        "answer_bytes": answer,
        "first_result_s_median": round(statistics.median(seconds), 3),
        "first_result_s_all": [round(s, 3) for s in seconds],
    }
    print(
        f"page: {figures['page_bytes'] / 1024:.0f} KB in {len(loaded)} requests; one answer with overlays: "
        f"{answer / 1024:.0f} KB; time to first result: median {figures['first_result_s_median'] * 1000:.0f} ms "
        f"({', '.join(f'{s * 1000:.0f}' for s in seconds)} ms)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
