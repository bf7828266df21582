"""Load check of the web demo: N concurrent colourisation requests over loopback must all succeed.

    python bench/app_load.py [--requests 20] [--image examples/astronaut_gray.jpg] \
        [--out bench/results/app_load] [--screenshot docs/app.png] [--examples-sheet docs/app_examples.jpg]

Starts ``app.py`` as a separate server process on a free 127.0.0.1 port (from an empty temporary
working directory, which must still be empty afterwards), waits until it answers, then fires all
requests at once through ``gradio_client`` (one client per request, like separate browser tabs).
Latency is per request from submission to result, so it includes time waiting in the server's
queue: with concurrency 1 the last request waits for all the others. Peak memory is the server
process's resident high-water mark (VmHWM). Uses the shipped experts when ``experts/`` has any,
otherwise tiny random experts (stated in the results: then the numbers measure the plumbing only).
Writes JSON and Markdown.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image
from timing_env import env_note, threading_env  # bench/ is this script's folder, hence on sys.path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation: with 20 samples p90 is the 18th slowest)."""
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(q / 100 * len(ordered)))) - 1]


def server_memory_mb(pid: int) -> dict[str, float]:
    """Resident memory now and its high-water mark for ``pid`` (Linux /proc)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def make_tiny_experts(root: Path) -> Path:
    """Random tiny experts for machines without trained weights (measures the server, not the nets)."""
    from ensemble_color.nets import create_model, tiny_config
    from ensemble_color.plugins import export_expert

    arch = "resnet18-deconv"
    for name, routes in (("scenes", ["background"]), ("faces", ["person"])):
        export_expert(create_model(arch, **tiny_config(arch)), root / name,
                      {"name": name, "architecture": arch, "config": tiny_config(arch), "routes": routes,
                       "version": "bench"})
    return root


def wait_until_up(url: str, proc: subprocess.Popen, timeout: float) -> None:
    """Poll the page until it answers; fail early with the server's output if it exited."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.5)
    raise TimeoutError(f"server at {url} did not answer within {timeout:.0f} s")


def one_request(url: str, image: Path, work_size: int, download_dir: Path) -> dict:
    """One colourisation through the public API; returns timing and what came back."""
    from gradio_client import Client, handle_file

    t0 = time.perf_counter()
    client = Client(url, verbose=False, download_files=str(download_dir))
    t1 = time.perf_counter()
    before_after, _, _, _, download, status = client.predict(
        handle_file(str(image)), work_size, 1.0, None, None, True, True, api_name="/colorize")
    t2 = time.perf_counter()
    with Image.open(download) as im:
        size = im.size
    ok = status is not None and "worked at" in status and before_after is not None
    return {"ok": ok, "seconds": t2 - t0, "connect_s": t1 - t0, "size": size, "status": status}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--image", type=Path, default=REPO / "examples" / "astronaut_gray.jpg")
    ap.add_argument("--work-size", type=int, default=512)
    ap.add_argument("--concurrency", type=int, default=1, help="server's concurrency limit")
    ap.add_argument("--queue-size", type=int, default=32)
    ap.add_argument("--experts", type=Path,
                    help="expert folder (default: shipped experts/, else tiny random)")
    ap.add_argument("--router", default="embedded")
    ap.add_argument("--startup-timeout", type=float, default=300)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "app_load")
    ap.add_argument("--screenshot", type=Path, help="also save a full-page screenshot of the app after one "
                    "colourisation (Debian chromium + playwright), e.g. docs/app.png")
    ap.add_argument("--examples-sheet", type=Path, help="also save before/after pairs of every bundled "
                    "example, as the served app returns them, e.g. docs/app_examples.jpg")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="app_load_") as tmp_name:
        tmp = Path(tmp_name)
        cwd = tmp / "cwd"
        cwd.mkdir()
        server_args = ["--concurrency", str(args.concurrency), "--queue-size", str(args.queue_size),
                       "--router", args.router]
        from ensemble_color.weights import shipped_experts_dir

        shipped = sorted(p.parent.name for p in shipped_experts_dir().glob("*/expert.json"))
        if args.experts:
            server_args += ["--experts", str(args.experts.resolve())]  # the server runs elsewhere
            experts_note = f"experts from {args.experts}"
        elif shipped:
            experts_note = f"shipped experts: {', '.join(shipped)}"
        else:
            server_args += ["--no-shipped", "--experts", str(make_tiny_experts(tmp / "experts"))]
            experts_note = "tiny random experts (no trained experts installed): plumbing only"

        port = free_port()
        url = f"http://127.0.0.1:{port}/"
        cmd = [sys.executable, str(REPO / "app.py"), "--host", "127.0.0.1", "--port", str(port), *server_args]
        log_path = tmp / "server.log"
        with log_path.open("w") as log:
            t_start = time.perf_counter()
            proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
            try:
                wait_until_up(url, proc, args.startup_timeout)
                startup_s = time.perf_counter() - t_start
                idle = server_memory_mb(proc.pid)
                load_before = os.getloadavg()[0]
                t0 = time.perf_counter()
                with ThreadPoolExecutor(max_workers=args.requests) as pool:
                    futures = [pool.submit(one_request, url, args.image, args.work_size, tmp / f"dl{i}")
                               for i in range(args.requests)]
                    results = []
                    for f in futures:
                        try:
                            results.append(f.result())
                        except Exception as err:  # recorded as a failed request, and the run fails below
                            results.append({"ok": False, "error": f"{type(err).__name__}: {err}"})
                wall_s = time.perf_counter() - t0
                mem = server_memory_mb(proc.pid)
                if args.screenshot:
                    screenshot(url, args.image, args.screenshot)
                if args.examples_sheet:
                    examples_sheet(url, args.work_size, args.examples_sheet, tmp / "sheet")
            except BaseException:
                print(log_path.read_text()[-4000:], file=sys.stderr)
                raise
            finally:
                proc.terminate()
                proc.wait(timeout=30)
        stray = sorted(p.name for p in cwd.iterdir())

    with Image.open(args.image) as im:
        in_size = im.size
    ok = [r for r in results if r["ok"] and tuple(r["size"]) == in_size]
    lat = [r["seconds"] for r in results if r["ok"]]
    summary = {
        "requests": args.requests, "succeeded": len(ok), "failed": args.requests - len(ok),
        "image": str(args.image.relative_to(REPO) if args.image.is_relative_to(REPO) else args.image),
        "image_size": list(in_size), "work_size": args.work_size, "server_concurrency": args.concurrency,
        "queue_size": args.queue_size, "router": args.router, "experts": experts_note,
        "latency_s": {"p50": percentile(lat, 50), "p90": percentile(lat, 90), "max": max(lat),
                      "min": min(lat), "mean": statistics.mean(lat)} if lat else None,
        "wall_s": wall_s, "throughput_per_min": 60 * len(ok) / wall_s, "startup_s": startup_s,
        "server_rss_mb": {"idle_after_start": idle.get("VmRSS"), "peak": mem.get("VmHWM"),
                          "end": mem.get("VmRSS")},
        "files_left_in_working_dir": stray,
        "errors": [r.get("error") for r in results if not r["ok"]][:5],
        "example_status": next((r["status"] for r in results if r["ok"]), None),
        "load_average_1min_before": load_before, "env": threading_env(),
        "machine": {"python": platform.python_version(), "cpus": len(os.sched_getaffinity(0)),
                    "platform": platform.platform()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(to_markdown(summary))
    print(to_markdown(summary))
    if len(ok) != args.requests or stray:
        raise SystemExit(f"FAILED: {len(ok)}/{args.requests} requests succeeded; files left in cwd: {stray}")


def screenshot(url: str, image: Path, out: Path) -> None:
    """Upload ``image`` in headless Debian chromium, wait for the result and save the whole page."""
    from playwright.sync_api import sync_playwright

    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=args)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(url, wait_until="domcontentloaded")
            page.locator("#input-image input[type=file]").set_input_files(str(image))
            page.locator("#status").get_by_text("worked at").wait_for(timeout=300_000)
            page.locator("#gallery img").first.wait_for(state="visible", timeout=60_000)
            page.wait_for_timeout(1000)  # let the images finish painting
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
            with Image.open(out) as shot:
                shot.convert("RGB").save(out, optimize=True)  # drop the alpha channel
        finally:
            browser.close()


def examples_sheet(url: str, work_size: int, out: Path, download_dir: Path, height: int = 300) -> None:
    """One row per bundled example: the app's 'before' and 'after' images side by side."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False, download_files=str(download_dir))
    rows = []
    for image in sorted((REPO / "examples").glob("*.jpg")):
        (before, after), *_ = client.predict(handle_file(str(image)), work_size, 1.0, None, None, False,
                                             False, api_name="/colorize")
        pair = [Image.open(p).convert("RGB") for p in (before, after)]
        pair = [im.resize((round(im.width * height / im.height), height), Image.Resampling.LANCZOS)
                for im in pair]
        rows.append(pair)
    gap = 6
    width = max(a.width + b.width for a, b in rows) + gap
    sheet = Image.new("RGB", (width, len(rows) * (height + gap) - gap), "white")
    for i, (a, b) in enumerate(rows):
        y = i * (height + gap)
        sheet.paste(a, (0, y))
        sheet.paste(b, (a.width + gap, y))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, quality=85, optimize=True)


def to_markdown(s: dict) -> str:
    lat = s["latency_s"] or {}
    mem = s["server_rss_mb"]
    return "\n".join([
        "# Web demo load check (`bench/app_load.py`)",
        "",
        f"{s['requests']} simultaneous `/colorize` requests over loopback (gradio_client, one client each), "
        f"image `{s['image']}` ({s['image_size'][0]}×{s['image_size'][1]}), working size {s['work_size']}, "
        f"router `{s['router']}`, {s['experts']}. Server: concurrency {s['server_concurrency']}, "
        f"queue size {s['queue_size']}; {s['machine']['cpus']} CPU cores, no GPU. {env_note()}",
        "",
        "| succeeded | p50 latency | p90 latency | max latency | wall time | throughput | server peak RSS |",
        "|---|---|---|---|---|---|---|",
        f"| {s['succeeded']}/{s['requests']} | {lat.get('p50', float('nan')):.1f} s | "
        f"{lat.get('p90', float('nan')):.1f} s | {lat.get('max', float('nan')):.1f} s | "
        f"{s['wall_s']:.1f} s | "
        f"{s['throughput_per_min']:.1f} /min | {mem['peak']:.0f} MB |",
        "",
        f"Latency counts from submission to result, so it includes queueing: requests run "
        f"{s['server_concurrency']} at a time. Server start-up (models loaded, page answering): "
        f"{s['startup_s']:.1f} s; RSS idle after start {mem['idle_after_start']:.0f} MB. "
        f"Files left in the server's working directory: {len(s['files_left_in_working_dir'])}. "
        f"Machine load average (1 min) before the burst: {s['load_average_1min_before']:.1f} "
        "(other jobs sharing the CPU inflate latency).",
        "",
        f"The app's status line for one request: _{s['example_status']}_",
        "",
    ])


if __name__ == "__main__":
    main()
