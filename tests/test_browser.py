"""The app in a real browser: start it on the bundled demo model, Run a prompt, open every tab, see
its plots.

Playwright drives Debian's Chromium (``apt-get install chromium``); without it the
tests skip. The app runs as a subprocess on a free port, offline, on the bundled demo model
(``austen-gpt2``: trained, so the screenshots show learned structure, not noise); the tiny
checkpoints in the session's private Hub cache are its other models. Screenshots of every tab go to
``artifacts/screenshots/<tab>.png``.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from app_process import stop_app
from pathological_checkpoint import PATHOLOGICAL_REPO_ID
from tiny_checkpoint import TINY_REPO_ID

from components.interpret import HEAD_VIEW_ID
from gpt2_max.weights import DEMO_MODEL

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = REPO / "artifacts" / "screenshots"
TABS = ("Tokenize", "Embed", "Mask", "Attention", "MLP", "Blocks", "Logits", "Sample")
START_TIMEOUT_S = 180  # page answering (imports, Gradio start)
READY_TIMEOUT_S = 300  # model loaded: its trace graph is compiled once and cached
PLOT_TIMEOUT_MS = 120_000  # a tab's plots after Run (the refreshes are chained, 2 cores)
PROMPT_TOKENS = 64

if not CHROMIUM.exists():
    pytest.skip(
        "Chromium is not installed at /usr/bin/chromium (apt-get install -y chromium); the browser tests need it",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright for Python is not installed in this environment"
)


def prompt_of(n_tokens: int) -> str:
    """A readable prompt of exactly n tokens (checked with the app's own tokenizer)."""
    from gpt2_max.tokenizer import Tokenizer

    tokenizer = Tokenizer()
    story = (
        "The cat sat on the mat while the dog slept by the warm fire. The children played in the "
        "garden until the rain came, and then they ran inside to read stories about dragons, "
        "castles and brave knights who travelled across distant mountains. "
    )
    ids = tokenizer.encode(story * 4)[:n_tokens]
    text = tokenizer.decode(ids)
    assert len(tokenizer.encode(text)) == n_tokens
    return text


def prompt_words(text: str) -> list[str]:
    return sorted({w.lower() for w in re.findall(r"[A-Za-z]{3,}", text)})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app on the bundled demo model, in a subprocess: yields its URL; always terminated."""
    port = free_port()
    env = {
        **os.environ,
        "HF_HUB_CACHE": os.environ["HF_HUB_CACHE"],  # the session's private cache (conftest)
        "HF_HUB_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "MODULAR_TELEMETRY_ENABLED": "0",
        "PYTHONUNBUFFERED": "1",
        # Examples the app saves after loading go to a temporary place, not ~/.cache.
        "GPT2_EXPLORER_CACHE_DIR": str(tmp_path_factory.mktemp("explorer-cache")),
        # A second model (the tiny one's shape: its graphs come from MAX's cache) that loads only
        # when a page picks it: what a Run pressed during loading is tested on.
        "GPT2_EXPLORER_ALLOWED_MODELS": f"{TINY_REPO_ID},{PATHOLOGICAL_REPO_ID}",
    }
    log_path = tmp_path_factory.mktemp("app") / "app.log"
    python = REPO / ".venv" / "bin" / "python"
    command = [
        str(python if python.exists() else sys.executable),
        "app.py",
        "--model",
        DEMO_MODEL,
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
    ]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"the app exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the app did not answer within {START_TIMEOUT_S} s:\n{log_path.read_text()[-4000:]}")
            time.sleep(1)
        yield url
    finally:
        stop_app(process)
        print(f"\napp log ({log_path}):\n{log_path.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            timeout=60_000,
        )
        try:
            yield chromium
        finally:
            chromium.close()


def open_app(browser, url: str, width: int, height: int):
    """A new page at the app, once the model is ready."""
    context = browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.goto(url, timeout=60_000)
    page.locator("#prompt textarea").wait_for(state="visible", timeout=60_000)
    sync_api.expect(page.locator("#model-status")).to_contain_text("ready", timeout=READY_TIMEOUT_S * 1000)
    return page


@pytest.fixture(scope="module")
def page(browser, server):
    return open_app(browser, server, 1440, 900)


# True when the selected tab shows a Plotly plot of non-zero height whose SVG text holds a prompt word.
PLOT_WITH_WORD = """
(words) => {
  for (const plot of document.querySelectorAll('.js-plotly-plot')) {
    const box = plot.getBoundingClientRect();
    if (plot.offsetParent === null || box.height <= 0 || box.width <= 0) continue;
    const text = Array.from(plot.querySelectorAll('svg text')).map(t => t.textContent).join(' ').toLowerCase();
    if (words.some(w => text.includes(w))) return true;
  }
  return false;
}
"""

ERROR_TOASTS = ".toast-body.error"


def open_tab(page, name: str) -> None:
    tab = page.get_by_role("tab", name=name, exact=True)
    if tab.count() == 0:
        # On a narrow screen Gradio moves the tabs that do not fit into a "More tabs" menu.
        page.get_by_role("button", name="More tabs").click(timeout=15_000)
        page.locator(".overflow-dropdown button", has_text=name).click(timeout=15_000)
        return
    tab.click(timeout=15_000)


def run_prompt(page, text: str) -> float:
    """Types text, clicks Run; returns the click's time.perf_counter()."""
    page.locator("#prompt textarea").fill(text)
    started = time.perf_counter()
    page.locator("#run-button").click()
    return started


def test_every_tab_shows_plots_of_the_prompt(page):
    text = prompt_of(PROMPT_TOKENS)
    words = prompt_words(text)
    started = run_prompt(page, text)
    sync_api.expect(page.locator("#run-note")).to_contain_text(f"{PROMPT_TOKENS} tokens", timeout=PLOT_TIMEOUT_MS)
    traced = time.perf_counter() - started
    drawn_at = {}
    for name in TABS:
        open_tab(page, name)
        try:
            page.wait_for_function(PLOT_WITH_WORD, arg=words, timeout=PLOT_TIMEOUT_MS, polling=250)
        except sync_api.TimeoutError:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / f"{name.lower()}-failed.png"), full_page=True)
            pytest.fail(f"the {name} tab shows no plot with a word of the prompt in {PLOT_TIMEOUT_MS / 1000:.0f} s")
        drawn_at[name] = time.perf_counter() - started
    total = time.perf_counter() - started
    print(
        f"\n{PROMPT_TOKENS}-token prompt: Run -> trace shown {traced:.2f} s; Run -> plots of all eight tabs drawn "
        f"{total:.2f} s (" + ", ".join(f"{k} {v:.1f}" for k, v in drawn_at.items()) + ")"
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for name in TABS:
        open_tab(page, name)
        page.wait_for_function(PLOT_WITH_WORD, arg=words, timeout=PLOT_TIMEOUT_MS, polling=250)
        page.wait_for_timeout(500)  # let Plotly finish its transitions before the picture
        page.screenshot(path=str(SCREENSHOTS / f"{name.lower()}.png"), full_page=True)
    errors = page.locator(ERROR_TOASTS).all_inner_texts()
    assert not errors, f"error messages on the page: {errors}"


def test_sample_tab_streams_a_generation(page):
    open_tab(page, "Sample")
    page.locator("#sample-generate").click()
    sync_api.expect(page.locator("#sample-status")).to_contain_text("tokens generated", timeout=PLOT_TIMEOUT_MS)
    # the generated text is marked, and the step chart is for the last step
    assert page.locator("#sample-text mark").count() >= 1
    plot_title(page, ".js-plotly-plot", "Step")
    page.locator("#sample-n-button").click()
    plot_title(page, ".js-plotly-plot", "draws of the token")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(500)
    page.screenshot(path=str(SCREENSHOTS / "sample-generated.png"), full_page=True)
    errors = page.locator(ERROR_TOASTS).all_inner_texts()
    assert not errors, f"error messages on the page: {errors}"


# Every drawn plot of the tab on screen (not message figures: they have no drawing area): the
# plot's width, its drawing areas' (one per subplot) and what lies outside the plot or on
# something else. Axis labels collide when neighbours are closer than their font (measured
# across the text's direction when Plotly turned them).
PLOT_LAYOUT = """
() => Array.from(document.querySelectorAll('.js-plotly-plot')).filter(p => p.offsetParent !== null).map(plot => {
  const box = plot.getBoundingClientRect();
  const rects = (sel) => Array.from(plot.querySelectorAll(sel)).map(e => e.getBoundingClientRect()).filter(r => r.width > 0);
  const outside = (rs) => rs.some(r => r.left < box.left - 1 || r.right > box.right + 1 || r.top < box.top - 1 || r.bottom > box.bottom + 1);
  const meet = (r, q) => r.left < q.right - 1 && q.left < r.right - 1 && r.top < q.bottom - 1 && q.top < r.bottom - 1;
  const hit = (a, b) => a.some(r => b.some(q => meet(r, q)));
  const overlapping = (rs) => rs.some((r, i) => rs.slice(0, i).some(q => meet(r, q)));
  const crowded = (sel) => {
    const texts = Array.from(plot.querySelectorAll(sel)).filter(t => t.getBoundingClientRect().width > 0);
    if (texts.length < 2) return false;
    const turn = (texts[0].getAttribute('transform') || '').match(/rotate\\((-?[0-9.]+)/);
    const angle = turn ? Math.abs(parseFloat(turn[1])) : 0;
    if (angle < 1) return overlapping(texts.map(t => t.getBoundingClientRect()));
    const size = parseFloat(getComputedStyle(texts[0]).fontSize) || 14;
    const ends = texts.map(t => t.getBoundingClientRect().right).sort((a, b) => a - b);
    return ends.some((x, i) => i > 0 && (x - ends[i - 1]) * Math.sin(angle * Math.PI / 180) < size);
  };
  const title = rects('.gtitle');
  const legend = rects('.legend .bg');
  const areas = Array.from(plot.querySelectorAll('.nsewdrag')).map(d => d.getBoundingClientRect().width);
  return {
    title: title.length ? plot.querySelector('.gtitle').textContent : '',
    width: box.width,
    area: areas.reduce((a, b) => a + b, 0),
    problems: Object.entries({
      'title cut off': outside(title),
      'axis title cut off': outside(rects('.g-xtitle text, .g-ytitle text, .g-x2title text')),
      'legend cut off': outside(legend),
      'colour bar cut off': outside(rects('.colorbar .cbbg')),
      'legend on the title': hit(legend, title),
      'legend or colour bar on the axis labels': hit(legend.concat(rects('.colorbar .cbbg')), rects('.xtick text, .g-xtitle text')),
      'x labels crowded': crowded('.xtick text'),
      'y labels crowded': crowded('.ytick text'),
      'cell texts run together': overlapping(rects('.heatmap-label text, .bartext')),
    }).filter(([, bad]) => bad).map(([what]) => what),
  };
}).filter(plot => plot.area > 0)
"""

# Each dropdown's value: where its text ends (the text's own width, or where the box cuts it)
# and where the arrow Gradio draws over the box's right end begins.
DROPDOWNS = """
() => Array.from(document.querySelectorAll('.wrap-inner')).filter(w => w.offsetParent !== null).map(wrap => {
  const input = wrap.querySelector('input');
  const arrow = wrap.querySelector('.icon-wrap');
  if (!input || !arrow) return null;
  const box = input.getBoundingClientRect();
  const style = getComputedStyle(input);
  const context = document.createElement('canvas').getContext('2d');
  context.font = style.font;
  const ends = box.left + parseFloat(style.paddingLeft) + context.measureText(input.value).width;
  return {value: input.value, text_right: Math.min(ends, box.right - parseFloat(style.paddingRight)),
          arrow_left: arrow.getBoundingClientRect().left};
}).filter(Boolean)
"""

# The phone's tabs with plots, each plot's smallest share of its width left to the data: the
# Attention pattern had 124 of 324 px beside its colour bar and position-0 bars, the
# embeddings 109 beside their colour bars, a plot with a legend at the right 70.
PHONE_TABS = ("Tokenize", "Embed", "Mask", "Attention", "MLP", "Blocks", "Logits")
PHONE_DATA_SHARE = 0.45


def test_phone_width_page_fits_and_plots(browser, server):
    """A phone (390 x 844): no sideways scrolling; the status line as wide as the page (it was a
    ~50 px column beside the model picker); no dropdown's arrow over its value; and in every tab
    with plots, each plot's data keeps at least PHONE_DATA_SHARE of its width, and no title, axis
    title, legend or colour bar is cut off or lies on another, nor do axis labels run together."""
    phone = open_app(browser, server, 390, 844)
    assert phone.locator("#model-status").bounding_box()["width"] >= 300
    text = "The cat sat on the mat. The cat sat on the"
    run_prompt(phone, text)
    sync_api.expect(phone.locator("#run-note")).to_contain_text("tokens", timeout=PLOT_TIMEOUT_MS)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    faults = []
    for name in PHONE_TABS:
        open_tab(phone, name)
        phone.wait_for_function(PLOT_WITH_WORD, arg=prompt_words(text), timeout=PLOT_TIMEOUT_MS, polling=250)
        phone.wait_for_timeout(1500)  # the tab's other plots and Plotly's transitions
        phone.screenshot(path=str(SCREENSHOTS / f"phone-{name.lower()}.png"), full_page=True)
        overflow = phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"the {name} tab scrolls sideways by {overflow} px at phone width"
        plots = phone.evaluate(PLOT_LAYOUT)
        assert plots, f"no plot drawn in the {name} tab"
        for plot in plots:
            if plot["area"] < PHONE_DATA_SHARE * plot["width"]:
                plot["problems"].append(f"data {plot['area']:.0f} of {plot['width']:.0f} px wide")
            faults += [f"{name}: {plot['title'][:60]!r}: {what}" for what in plot["problems"]]
        for box in phone.evaluate(DROPDOWNS):
            if box["text_right"] > box["arrow_left"] + 1:
                faults.append(f"{name}: the dropdown showing {box['value']!r} has its arrow over its text")
    assert not faults, "at 390 px wide:\n" + "\n".join(faults)
    phone.context.close()


# True when a plot at the selector has a title containing the text, its lines read as one (the
# builders wrap titles into lines, each its own <tspan>, whose textContent runs them together).
TITLE_HAS = """
([selector, text]) => Array.from(document.querySelectorAll(selector + ' .gtitle')).some(title => {
  const lines = title.querySelectorAll('tspan.line');
  const read = lines.length ? Array.from(lines).map(line => line.textContent).join(' ') : title.textContent;
  return read.replace(/\\s+/g, ' ').includes(text);
})
"""


def plot_title(page, selector: str, text: str):
    """Waits until the plot at ``selector`` has a title containing ``text`` (a screenshot if not)."""
    try:
        page.wait_for_function(TITLE_HAS, arg=[selector, text], timeout=PLOT_TIMEOUT_MS, polling=250)
    except sync_api.TimeoutError:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "why-failed.png"), full_page=True)
        raise


# An element's top, in px from the window's top (negative: above it).
ELEMENT_TOP = "(selector) => document.querySelector(selector).getBoundingClientRect().top"


def test_why_views_detectors_patching_and_attribution(page):
    """The induction test lights the detectors, a click on a cell opens that head, the patching
    sweeps draw, and the IOI preset explains ' Mary' against ' John' in the Logits tab."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    open_tab(page, "Attention")
    page.locator("#induction-test").click()
    sync_api.expect(page.locator("#run-note")).to_contain_text("50 tokens", timeout=PLOT_TIMEOUT_MS)
    plot_title(page, "#detectors-plot", "Head detectors")
    detectors = page.locator("#detectors-plot")
    detectors.scroll_into_view_if_needed()
    page.wait_for_timeout(1500)  # the page script wires new plots every 0.7 s
    # The head's view (its controls, its pattern under them) is far above the detectors: out of sight.
    assert page.evaluate(ELEMENT_TOP, f"#{HEAD_VIEW_ID}") < 0
    # The third subplot (induction): click the centre of its drag layer, i.e. a middle cell.
    cells = detectors.locator(".nsewdrag")
    cells.nth(2).click()
    pick = page.locator("#head-pick textarea, #head-pick input").first
    page.wait_for_function(
        "() => { const b = document.querySelector('#head-pick textarea, #head-pick input'); return b && b.value.includes(','); }",
        timeout=30_000,
    )
    layer, head = (int(v) for v in pick.input_value().split(",")[:2])
    plot_title(page, ".js-plotly-plot", f"layer {layer} head {head}")
    # ... and now scrolled into sight, at the top of the window (a pixel's rounding allowed).
    page.wait_for_function(
        f"(selector) => {{ const top = ({ELEMENT_TOP})(selector); return top > -2 && top < window.innerHeight / 2; }}",
        arg=f"#{HEAD_VIEW_ID}",
        timeout=30_000,
        polling=200,
    )
    page.screenshot(path=str(SCREENSHOTS / "attention-picked-head.png"))
    detectors.scroll_into_view_if_needed()
    detectors.screenshot(path=str(SCREENSHOTS / "attention-detectors.png"))

    page.locator("#patch-heads-go").click()
    plot_title(page, "#patch-heads-plot", "restored by patching each head")
    page.locator("#patch-heads-plot").screenshot(path=str(SCREENSHOTS / "attention-patching.png"))

    open_tab(page, "Blocks")
    page.locator("#patch-residual-go").click()
    plot_title(page, "#patch-residual-plot", "restored by patching the residual stream")
    page.locator("#patch-residual-plot").screenshot(path=str(SCREENSHOTS / "blocks-patching.png"))

    open_tab(page, "Logits")
    page.get_by_role("button", name="Preset: indirect object").click()
    sync_api.expect(page.locator("#run-note")).to_contain_text("14 tokens", timeout=PLOT_TIMEOUT_MS)
    plot_title(page, "#attribution-plot", "Mary")
    plot_title(page, "#attribution-plot", "John")
    page.wait_for_timeout(500)
    page.screenshot(path=str(SCREENSHOTS / "logits-attribution.png"), full_page=True)
    errors = page.locator(ERROR_TOASTS).all_inner_texts()
    assert not errors, f"error messages on the page: {errors}"


def test_a_slider_moved_with_the_keyboard_redraws(browser, server):
    """Focus the Attention tab's layer slider and press → twice: the pattern is layer 2's (a page of
    its own: the shared one's sliders were moved by the detector click)."""
    page = open_app(browser, server, 1440, 900)
    open_tab(page, "Attention")
    run_prompt(page, "The cat sat on the mat. The cat sat on the")
    sync_api.expect(page.locator("#run-note")).to_contain_text("Live", timeout=PLOT_TIMEOUT_MS)
    plot_title(page, "#attention-pattern-plot", "layer 0 head 0")
    slider = page.locator("#attention-layer input[type=range]")
    slider.focus()
    slider.press("ArrowRight")
    slider.press("ArrowRight")
    sync_api.expect(page.locator("#attention-layer input[type=number]")).to_have_value("2")
    plot_title(page, "#attention-pattern-plot", "layer 2 head 0")
    page.context.close()


def test_a_run_pressed_while_the_model_loads_is_traced_when_it_is_ready(browser, server):
    """Pick a model that has not loaded and press Run at once: the note says the Run waits (its tokens
    in Tokenize), then it is traced live by itself; no "still loading" warning is left behind."""
    page = open_app(browser, server, 1440, 900)
    page.locator("#model-choice input").click()
    page.get_by_role("option", name=PATHOLOGICAL_REPO_ID).click()
    run_prompt(page, "A prompt for the model that is still loading")
    sync_api.expect(page.locator("#run-note")).to_contain_text("waits for the model", timeout=30_000)
    sync_api.expect(page.locator("#run-note")).to_contain_text("Live", timeout=READY_TIMEOUT_S * 1000)
    sync_api.expect(page.locator("#run-note")).not_to_contain_text("loading")
    sync_api.expect(page.locator("#model-status")).to_contain_text("ready", timeout=READY_TIMEOUT_S * 1000)
    page.context.close()


def test_two_prompts_side_by_side_in_attention_blocks_and_logits(browser, server):
    """A compare prompt (one word changed) and Run: the note names B, and Attention, Blocks and Logits
    each draw B's figures beside A's (B's pattern and A − B; B's logit lens and where the two part;
    each one's top tokens under the other), in a page of its own."""
    page = open_app(browser, server, 1440, 900)
    page.locator("#compare-prompt textarea").fill("The dog sat on the mat. The dog sat on the")
    run_prompt(page, "The cat sat on the mat. The cat sat on the")
    sync_api.expect(page.locator("#run-note")).to_contain_text("Compare with (B)", timeout=PLOT_TIMEOUT_MS)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # (plot, a word of its title, whether B's tokens are on its axes) per tab.
    shown = {
        "Attention": (
            ("#attention-pattern-plot", "Attention pattern", False),
            ("#attention-compare-pattern", "B (compare", True),
            ("#attention-difference", "A − B", True),
        ),
        "Blocks": (("#blocks-compare-lens", "B (compare", True), ("#blocks-parting", "predictions part", False)),
        "Logits": (("#logits-a-under-b", "A's top", False), ("#logits-b-under-a", "B's top", False)),
    }
    for name, plots in shown.items():
        open_tab(page, name)
        page.wait_for_function(PLOT_WITH_WORD, arg=["cat"], timeout=PLOT_TIMEOUT_MS, polling=250)  # A's figures
        for selector, title, b_tokens in plots:
            plot_title(page, selector, title)
            if b_tokens:
                words = page.locator(f"{selector} svg text").filter(has_text="dog")
                sync_api.expect(words).not_to_have_count(0)
        page.wait_for_timeout(500)  # let Plotly finish its transitions before the picture
        page.screenshot(path=str(SCREENSHOTS / f"compare-{name.lower()}.png"), full_page=True)
    errors = page.locator(ERROR_TOASTS).all_inner_texts()
    assert not errors, f"error messages on the page: {errors}"
    page.context.close()


# Every drawn plot of the tab on screen, in page order, as text to compare: its title and each
# trace's data (Plotly's typed arrays as lists): what a student sees, number for number.
PLOTS_SNAPSHOT = """
() => JSON.stringify(Array.from(document.querySelectorAll('.js-plotly-plot'))
  .filter(p => p.offsetParent !== null && p.data && p.data.length)
  .map(p => ({
    title: ((p.layout || {}).title || {}).text || '',
    data: p.data.map(t => Object.fromEntries(['type', 'x', 'y', 'z', 'text', 'customdata', 'base']
      .filter(k => t[k] !== undefined)
      .map(k => [k, ArrayBuffer.isView(t[k]) ? Array.from(t[k]) : t[k]]))),
  })))
"""


def copied_link(page) -> str:
    """Clicks "Copy link" and returns the new link the page wrote in its (read-only) box."""
    box = page.locator("#share-link textarea, #share-link input").first
    before = box.input_value()
    page.locator("#copy-link").click()
    page.wait_for_function(
        "(before) => { const b = document.querySelector('#share-link textarea, #share-link input');"
        " return b && b.value.includes('view=') && b.value !== before; }",
        arg=before,
        timeout=30_000,
    )
    return box.input_value()


def settled_plots(page) -> str:
    """PLOTS_SNAPSHOT once two readings a second apart agree (the tab's plots drawn)."""
    shown = page.evaluate(PLOTS_SNAPSHOT)
    for _ in range(30):
        page.wait_for_timeout(1000)
        again = page.evaluate(PLOTS_SNAPSHOT)
        if again == shown:
            return shown
        shown = again
    raise AssertionError("the tab's plots kept changing for 30 s")


def test_a_copied_link_opens_the_same_view_in_another_browser(browser, server):
    """For every tab: a student Runs a prompt, opens the tab (Attention and MLP with a slider moved),
    copies the link; a second browser context opens it and, with no other action, shows that tab with
    the same figures, title and data of every plot equal. Then presenter mode comes back through a
    link (screenshot: artifacts/screenshots/presenter.png), under a status line that says ready."""
    text = "The cat sat on the mat. The cat sat on the"
    teacher = open_app(browser, server, 1440, 900)
    run_prompt(teacher, text)
    sync_api.expect(teacher.locator("#run-note")).to_contain_text("Live", timeout=PLOT_TIMEOUT_MS)
    # A slider moved in these tabs, and the plot whose title then names the new layer.
    moved = {
        "Attention": ("#attention-layer", "#attention-pattern-plot", "layer 1 "),
        "MLP": ("#mlp-layer", ".js-plotly-plot", "Block 1:"),
    }
    for name in TABS:
        open_tab(teacher, name)
        if name != "Sample":  # its plots come from a generation, which a link does not start
            teacher.wait_for_function(PLOT_WITH_WORD, arg=prompt_words(text), timeout=PLOT_TIMEOUT_MS, polling=250)
        if name in moved:
            control, plot, title = moved[name]
            slider = teacher.locator(f"{control} input[type=range]")
            slider.focus()
            slider.press("ArrowRight")
            plot_title(teacher, plot, title)
        shown = settled_plots(teacher)
        link = copied_link(teacher)
        student = teacher.context.browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
        student.goto(link, timeout=60_000)
        sync_api.expect(student.locator("#run-note")).to_contain_text("Live", timeout=PLOT_TIMEOUT_MS)
        sync_api.expect(student.get_by_role("tab", name=name, exact=True)).to_have_attribute(
            "aria-selected", "true", timeout=PLOT_TIMEOUT_MS
        )
        try:
            student.wait_for_function(f"(want) => ({PLOTS_SNAPSHOT})() === want", arg=shown, timeout=PLOT_TIMEOUT_MS)
        except sync_api.TimeoutError:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            student.screenshot(path=str(SCREENSHOTS / f"link-{name.lower()}-failed.png"), full_page=True)
            got = student.evaluate(PLOTS_SNAPSHOT)
            pytest.fail(f"the link to {name} drew other figures: {got[:300]} ... against {shown[:300]} ...")
        assert not student.locator(ERROR_TOASTS).all_inner_texts()
        student.context.close()
    teacher.locator("#presenter-mode input").check()
    student = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
    student.goto(copied_link(teacher), timeout=60_000)
    sync_api.expect(student.locator("#run-note")).to_contain_text("Live", timeout=PLOT_TIMEOUT_MS)
    assert student.evaluate("document.body.classList.contains('presenter')")
    # A page opened once the model is ready says so at once (not the status of when the page was built).
    sync_api.expect(student.locator("#model-status")).to_contain_text("ready", timeout=3_000)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    student.wait_for_timeout(1500)
    student.screenshot(path=str(SCREENSHOTS / "presenter.png"))
    student.context.close()
    teacher.context.close()


def test_each_lesson_walked_through_with_a_right_and_a_wrong_answer(browser, server, tiny_model, explorer_service):
    """On the tiny model (its answers computed independently, as tests/test_lessons.py does): every
    lesson is chosen, set up (its prompt Run live), and each question answered once right (✅) and
    once wrong (❌ with the hint) by typing and pressing Check."""
    from test_lessons import LESSONS, independent_answer

    page = open_app(browser, server, 1440, 900)
    page.locator("#model-choice input").click()
    page.get_by_role("option", name=TINY_REPO_ID).click()
    sync_api.expect(page.locator("#model-status")).to_contain_text(TINY_REPO_ID, timeout=READY_TIMEOUT_S * 1000)
    sync_api.expect(page.locator("#model-status")).to_contain_text("ready", timeout=READY_TIMEOUT_S * 1000)
    page.locator("#lessons").get_by_text("Lessons:").click()
    for lesson in LESSONS:
        page.locator("#lesson-choice input").click()
        page.get_by_role("option", name=lesson.title, exact=True).click()
        sync_api.expect(page.locator("#lesson-text")).to_contain_text(lesson.title[:30])
        page.locator("#lesson-setup").click()
        sync_api.expect(page.locator("#run-note")).to_contain_text("Live", timeout=PLOT_TIMEOUT_MS)
        sync_api.expect(page.locator("#prompt textarea")).to_have_value(lesson.prompt, timeout=PLOT_TIMEOUT_MS)
        for slot, question in enumerate(lesson.questions):
            right, wrong = independent_answer(tiny_model, explorer_service, lesson, question)
            feedback = page.locator(f"#lesson-feedback-{slot}")
            for typed, mark in ((right, "✅"), (wrong, "❌")):
                page.locator(f"#lesson-answer-{slot} textarea, #lesson-answer-{slot} input").first.fill(typed)
                page.locator(f"#lesson-check-{slot}").click()
                sync_api.expect(feedback).to_contain_text(mark, timeout=60_000)
            assert "Hint:" in feedback.inner_text(), (lesson.title, question.check)  # the wrong answer's
    assert not page.locator(ERROR_TOASTS).all_inner_texts()
    page.context.close()
