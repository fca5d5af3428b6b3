"""Screenshots of every tab on the pathological checkpoint (tests/pathological_checkpoint.py).

    .venv/bin/python scripts/pathological_screenshots.py [--out docs/screenshots] [--port 7899]

Writes the checkpoint (random bulk plus the real GPT-2's huge position 0, sink heads and
LayerNorm outliers) into a temporary Hugging Face cache, starts ``app.py`` on it offline,
Runs a prompt in Debian's Chromium (Playwright), opens each tab once its plots are drawn and
saves ``<out>/pathological-<tab>.png``; the app is stopped afterwards, whatever happens.
They show whether the outliers wash out the scales; look at them.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from app_process import stop_app  # noqa: E402
from pathological_checkpoint import PATHOLOGICAL_REPO_ID, write_pathological_hub_cache  # noqa: E402

TABS = ("Tokenize", "Embed", "Mask", "Attention", "MLP", "Blocks", "Logits", "Sample")
PROMPT = "The cat sat on the mat. The cat sat on the"
# Tabs drawn for one head: shown on a sink head of the checkpoint (pathological_checkpoint.SINK_HEADS).
SINK_HEAD_TABS = {"Mask": "layer 0, head 1", "Attention": "layer 0 head 1"}
CHROMIUM = "/usr/bin/chromium"
WAIT_MS = 180_000  # page start, model load (warm MAX cache: seconds; cold: minutes), plots


def wait_for_page(url: str, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"the app did not answer within {timeout_s:.0f} s")


def screenshots(url: str, out: Path) -> list[Path]:
    from playwright.sync_api import expect, sync_playwright

    saved = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.set_default_timeout(WAIT_MS)
            page.goto(url)
            # Every graph compiled (trace, analysis, decode): the status line stops saying "In the background".
            expect(page.locator("#model-status")).to_contain_text("ready", timeout=WAIT_MS)
            expect(page.locator("#model-status")).not_to_contain_text("In the background", timeout=WAIT_MS)
            page.locator("#prompt textarea").fill(PROMPT)
            page.locator("#run-button").click()
            expect(page.locator("#run-note")).to_contain_text("tokens", timeout=WAIT_MS)
            for name in TABS:
                page.get_by_role("tab", name=name, exact=True).click()
                page.locator(f"#tab-{name.lower()} .js-plotly-plot").first.wait_for(state="visible")
                page.wait_for_timeout(1500)  # the tab's render and Plotly's drawing
                if name in SINK_HEAD_TABS:
                    # Head 1 of 0..3 on the tab's second slider: a click (its release redraws the head).
                    box = page.locator(f"#tab-{name.lower()} input[type=range]").nth(1).bounding_box()
                    page.mouse.click(box["x"] + box["width"] / 3, box["y"] + box["height"] / 2)
                    expect(
                        page.locator(f"#tab-{name.lower()} .js-plotly-plot .gtitle").filter(
                            has_text=SINK_HEAD_TABS[name]
                        )
                    ).not_to_have_count(0, timeout=WAIT_MS)
                    page.wait_for_timeout(1500)
                path = out / f"pathological-{name.lower()}.png"
                page.screenshot(path=str(path), full_page=True)
                saved.append(path)
        finally:
            browser.close()
    return saved


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    parser.add_argument("--port", type=int, default=7899)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pathological-") as scratch:
        cache = Path(scratch) / "hub"
        write_pathological_hub_cache(cache)
        env = {
            **os.environ,
            "HF_HUB_CACHE": str(cache),
            "HF_HUB_OFFLINE": "1",
            "GRADIO_ANALYTICS_ENABLED": "False",
            "MODULAR_TELEMETRY_ENABLED": "0",
            "GPT2_EXPLORER_CACHE_DIR": str(Path(scratch) / "explorer"),
        }
        command = [
            sys.executable,
            "app.py",
            "--model",
            PATHOLOGICAL_REPO_ID,
            "--port",
            str(args.port),
            "--host",
            "127.0.0.1",
        ]
        with open(Path(scratch) / "app.log", "wb") as log:
            process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{args.port}/"
            wait_for_page(url, process, WAIT_MS / 1000)
            for path in screenshots(url, args.out):
                print(path)
        finally:
            stop_app(process)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
