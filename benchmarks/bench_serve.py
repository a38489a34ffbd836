"""Load test of `heritage serve` on loopback: latency percentiles and the server's memory growth.

    python benchmarks/bench_serve.py                                         # shipped model, 500 requests, 8 at once
    python benchmarks/bench_serve.py --model runs/default-v1/best.safetensors --overlays
    python benchmarks/bench_serve.py --screenshot docs/figures/serve.png     # and the README figure (headless Chromium)
    python benchmarks/bench_serve.py --hostile                               # a hostile upload after every good one

The server runs as `heritage serve --port 0` in its own process, so the RSS read from /proc is the server's
alone; it is read after a warm-up of 2 x concurrency requests (first-use allocations are not a leak) and
again after the run. The photo is drawn here (a bell tower, 480 x 640, JPEG), never a dataset photo.
With --hostile every good upload is followed by a hostile one (a 1 x 100,000 PNG, a decompression-bomb
PNG, a DDS texture Pillow cannot decode, a truncated JPEG, random bytes), each of which must get its
expected status (200 for the thin PNG, 413 for the bomb, 415 for the rest), and every good upload the
same answer. Exits 1 when any request fails or RSS grows by more than --max-growth-mb.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import select
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageDraw


def draw_bell_tower(width: int = 480, height: int = 640, seed: int = 0) -> Image.Image:
    """A bell tower against the sky, drawn with Pillow: brick shaft, arched belfry openings, pyramid roof."""
    rng = np.random.default_rng(seed)
    sky = np.linspace([120, 165, 215], [205, 225, 240], height)[:, None, :].repeat(width, 1)
    image = Image.fromarray(sky.astype(np.uint8))
    pen = ImageDraw.Draw(image)
    pen.rectangle((0, 590, width, height), fill=(120, 118, 105))  # the square in front
    pen.rectangle((40, 430, 150, 600), fill=(190, 170, 140))  # neighbouring houses
    pen.rectangle((330, 460, 450, 600), fill=(175, 150, 120))
    pen.rectangle((165, 190, 315, 600), fill=(168, 92, 62))  # the shaft
    for y in range(200, 600, 14):  # brick courses
        pen.line((165, y, 315, y), fill=(140, 75, 50), width=2)
    pen.rectangle((158, 180, 322, 192), fill=(215, 205, 185))  # cornice
    pen.rectangle((158, 320, 322, 330), fill=(215, 205, 185))
    for left in (182, 252):  # belfry: two arched openings with a bell in each
        pen.rectangle((left, 230, left + 46, 305), fill=(40, 32, 30))
        pen.pieslice((left, 207, left + 46, 253), 180, 360, fill=(40, 32, 30))
        pen.chord((left + 12, 245, left + 34, 275), 180, 360, fill=(150, 120, 40))
    for top in (380, 470):  # small windows lower down
        pen.rectangle((228, top, 252, top + 40), fill=(55, 45, 40))
        pen.pieslice((228, top - 12, 252, top + 12), 180, 360, fill=(55, 45, 40))
    pen.polygon([(150, 182), (330, 182), (240, 60)], fill=(85, 95, 100))  # roof
    pen.line((240, 60, 240, 20), fill=(60, 60, 60), width=4)  # cross
    pen.line((226, 34, 254, 34), fill=(60, 60, 60), width=4)
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, 6, (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def start_server(model: str | None, extra: list[str]) -> tuple[str, subprocess.Popen]:
    command = [sys.executable, "-m", "heritage_cnn.cli", "serve", "--port", "0", *extra]
    command += ["--model", model] if model else []
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ready, _, _ = select.select([process.stdout], [], [], 120)
    line = process.stdout.readline() if ready else ""
    if "http://" not in line:
        process.kill()
        raise SystemExit(f"heritage serve did not start: {line}{process.stdout.read()}")
    return line.split()[2], process


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc")


def hostile_uploads(photo: bytes) -> list[tuple[bytes, int]]:
    """Hostile files, each with the status it must get."""
    thin = io.BytesIO()
    Image.new("RGB", (1, 100_000), (200, 120, 40)).save(thin, format="PNG")  # 64 x 6.4 M if resized naively

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0))
    bomb += chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + chunk(b"IEND", b"")
    dds = b"DDS " + struct.pack("<7I", 124, 0x1007, 4, 4, 0, 0, 0) + b"\0" * 44  # pixel format "ZZZZ"
    dds += struct.pack("<8I", 32, 0x4, int.from_bytes(b"ZZZZ", "little"), 0, 0, 0, 0, 0) + b"\0" * 84
    random_bytes = np.random.default_rng(0).bytes(20_000)
    return [(thin.getvalue(), 200), (bomb, 413), (dds, 415), (photo[: len(photo) // 3], 415), (random_bytes, 415)]


def load(
    url: str, photo: bytes, requests: int, concurrency: int, overlays: bool, hostile: bool = False
) -> tuple[list[int], np.ndarray, float]:
    """`requests` POSTs, `concurrency` at a time: (statuses, latencies in ms, seconds). With `hostile`, every
    odd request is a hostile file; a status other than the expected one is returned as 0 (an error)."""
    endpoint = f"{url}api/predict" + ("?overlays=true" if overlays else "")
    bad = hostile_uploads(photo) if hostile else []
    answers: set[str] = set()

    def one(i: int) -> tuple[int, float]:
        data, expected = bad[(i // 2) % len(bad)] if hostile and i % 2 else (photo, 200)
        started = time.perf_counter()
        response = client.post(endpoint, files={"photo": ("tower.jpg", data, "image/jpeg")})
        seconds = time.perf_counter() - started
        if data is photo and response.status_code == 200:
            answers.add(json.dumps({k: v for k, v in response.json().items() if k != "overlays"}))
        if hostile:
            return (200 if response.status_code == expected else 0), seconds
        return response.status_code, seconds

    limits = httpx.Limits(max_connections=concurrency)
    with httpx.Client(timeout=60, limits=limits) as client, ThreadPoolExecutor(concurrency) as pool:
        started = time.perf_counter()
        results = list(pool.map(one, range(requests)))
        seconds = time.perf_counter() - started
    statuses = [s for s, _ in results] + ([0] if len(answers) > 1 else [])  # good photo, differing answers: error
    return statuses, np.array([t for _, t in results]) * 1000, seconds


def screenshot(url: str, photo: Path, path: Path) -> None:
    """The page after uploading `photo`, in Debian's headless Chromium (as in tests/apps/test_serve.py)."""
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,1180", f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path="/usr/bin/chromedriver"))
    try:
        driver.get(url)
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: d.find_element(By.ID, "model").text.startswith("model "))
        driver.find_element(By.ID, "file").send_keys(str(photo))
        wait.until(  # the result card complete: answer and every image decoded
            lambda d: d.execute_script(
                "const c = document.querySelector('#results article');"
                "return c && !c.classList.contains('pending') && [...document.images].every(i => i.naturalWidth)"
            )
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(path))
    finally:
        driver.quit()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint (default: the shipped model)")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--overlays", action="store_true", help="ask for Grad-CAM and deconvnet in every answer")
    parser.add_argument("--max-growth-mb", type=float, default=200.0, help="RSS growth that fails the run")
    parser.add_argument("--class-images", help="passed to heritage serve --class-images")
    parser.add_argument("--screenshot", type=Path, help="also save the page after an upload to this PNG")
    parser.add_argument("--hostile", action="store_true", help="a hostile upload after every good one")
    args = parser.parse_args()

    buffer = io.BytesIO()
    draw_bell_tower().save(buffer, format="JPEG", quality=90)
    photo = buffer.getvalue()
    url, process = start_server(args.model, ["--class-images", args.class_images] if args.class_images else [])
    try:
        load(url, photo, 2 * args.concurrency, args.concurrency, args.overlays)  # warm-up
        before = rss_mb(process.pid)
        statuses, latencies, seconds = load(url, photo, args.requests, args.concurrency, args.overlays, args.hostile)
        after = rss_mb(process.pid)
        errors = sum(status != 200 for status in statuses)
        print(
            f"{args.requests} requests{' (half of them hostile)' if args.hostile else ''}, {args.concurrency} "
            f"concurrent{', with overlays' if args.overlays else ''}: "
            f"{seconds:.1f} s, {args.requests / seconds:.1f} requests/s, {errors} errors\n"
            f"latency p50 {np.percentile(latencies, 50):.1f} ms, p95 {np.percentile(latencies, 95):.1f} ms, "
            f"max {latencies.max():.1f} ms\n"
            f"server RSS {before:.0f} MB -> {after:.0f} MB (growth {after - before:+.1f} MB, "
            f"bound {args.max_growth_mb:.0f} MB); load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
        )
        if args.screenshot:
            with tempfile.TemporaryDirectory() as folder:
                drawn = Path(folder) / "bell_tower_drawn.jpg"
                drawn.write_bytes(photo)
                screenshot(url, drawn, args.screenshot)
            print(f"screenshot: {args.screenshot}")
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return 1 if errors or after - before > args.max_growth_mb else 0


if __name__ == "__main__":
    raise SystemExit(main())
