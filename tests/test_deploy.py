"""Deployment: the warmup command, the container's and Kubernetes' files, and replicas behind HAProxy.

- The warmup works on the MAX cache it is pointed at (MODULAR_CACHE_DIR) and an app started
  afterwards on that cache has every graph ready within seconds. It is given a copy of this
  machine's cache (where the suite's own compiles put the tiny graphs): into an empty cache it would
  compile three graphs cold, minutes each here; deploy/dockerfile_dry_run.py does that (docs/deploy.md).
- Two replicas and HAProxy on loopback (deploy/replicas.py, what `bash run.sh replicas 2` starts),
  at the API level (gradio_client sessions): both replicas take students, each student's Run and
  Tokenize view are its own and stay on its replica (the affinity cookie); a replica dies as a
  student presses Run (that Run gets HAProxy's 502 in words, or is sent again to the other
  replica), its students' next Run works on the other replica with their own text, and the other
  replica's students keep their Runs and go on.
- The same in Chromium: the pages of the dead replica's students (one pressing Run, one idle) say
  what happened and what to do (components/reconnect.py), keep the typed prompt and are not
  reloaded; their next Run works on the other replica and every tab draws it; the other replica's
  page shows nothing of it.

Needs Debian's haproxy (`bash run.sh test` installs it); without it the HAProxy tests skip, and the
browser one without Chromium and Playwright.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx
import pytest
import yaml
from app_process import stop_app
from tiny_checkpoint import TINY_REPO_ID

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "deploy"))

import replica_ready  # noqa: E402
from replicas import LocalSchool, free_ports, replicas_config  # noqa: E402

PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable
HAPROXY = shutil.which("haproxy")
needs_haproxy = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (apt-get install -y haproxy)")

# Between a graph read from MAX's cache and one compiled: on this shared 2-core machine at the
# lowest priority beside a training run, the tiny model's graphs took 31-39 s each from the
# cache and 136-268 s each cold (docs/deploy.md).
CACHED_GRAPH_S = 90.0
# After the warmup, from starting app.py to every graph ready (imports, Gradio, three cached
# graphs), under that same load.
APP_READY_S = 400.0
REPLICAS_READY_S = 600.0  # two replicas load side by side, each as slowly as APP_READY_S allows
FAILOVER_S = 30.0  # HAProxy marks a dead replica DOWN after two failed checks 3 s apart


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def modular_cache_root() -> Path:
    """Where MAX keeps its caches in this environment (MODULAR_CACHE_DIR, else the XDG cache)."""
    if os.environ.get("MODULAR_CACHE_DIR"):
        return Path(os.environ["MODULAR_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "modular"


def compiled_graph_files(cache_root: Path) -> set[str]:
    """The compiled graphs (.mef files) in a MAX cache, by path."""
    mef = cache_root / ".max_cache" / "mof" / "mef"
    return {str(p.relative_to(mef)) for p in mef.rglob("*") if p.is_file()} if mef.is_dir() else set()


def app_env(cache_root: Path, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "MODULAR_CACHE_DIR": str(cache_root),
        "GPT2_EXPLORER_CACHE_DIR": str(tmp_path / "explorer-cache"),
        "GPT2_EXPLORER_ALLOWED_MODELS": TINY_REPO_ID,
        "GPT2_EXPLORER_TRACE_CACHE_MB": "64",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "PYTHONUNBUFFERED": "1",
    }


def warmup_then_start_app(cache_root: Path, tmp_path: Path) -> tuple[str, float, str, set[str]]:
    """Runs the warmup on ``cache_root``, then starts the app on it; returns the warmup's output,
    the seconds from the app's start to every graph ready, the app's status text then, and the
    compiled graphs the cache held after the warmup."""
    env = app_env(cache_root, tmp_path)
    warmup = subprocess.run(
        [PYTHON, "-m", "gpt2_max", "warmup", "--model", TINY_REPO_ID],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert warmup.returncode == 0, warmup.stdout + warmup.stderr
    assert f"MAX cache: {cache_root / '.max_cache'}" in warmup.stdout, warmup.stdout
    graphs_after_warmup = compiled_graph_files(cache_root)

    port = free_port()
    log_path = tmp_path / "app.log"
    started = time.monotonic()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [PYTHON, "app.py", "--model", TINY_REPO_ID, "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        status = ""
        while time.monotonic() - started < APP_READY_S:
            assert process.poll() is None, log_path.read_text()[-3000:]
            try:
                status = replica_ready.status(f"http://127.0.0.1:{port}")
            except OSError:
                status = ""
            # Ready, and nothing left in the background (the analysis and decode graphs).
            if replica_ready.READY_MARK in status and "In the background" not in status:
                return warmup.stdout, time.monotonic() - started, status, graphs_after_warmup
            time.sleep(0.5)
        pytest.fail(f"the app was not ready within {APP_READY_S} s: {status!r}\n{log_path.read_text()[-3000:]}")
    finally:
        stop_app(process)


def graph_seconds(status: str) -> dict[str, float]:
    """The status line's "MAX graphs compiled: trace 0.4 s, analysis 0.2 s, decode 0.3 s"."""
    return {
        graph: float(seconds)
        for graph, seconds in re.findall(r"(\w+) (\d+(?:\.\d+)?) s\b", status.split("compiled:", 1)[1])
    }


def check_warm_start(status: str, seconds: float) -> None:
    compiled = graph_seconds(status)
    assert set(compiled) == {"trace", "analysis", "decode"}, status
    assert all(value < CACHED_GRAPH_S for value in compiled.values()), (
        f"a graph was compiled, not read from the cache: {status}"
    )
    print(f"app ready {seconds:.1f} s after its start; graphs: {compiled}")


def test_warmup_on_a_copy_of_this_machines_cache(tmp_path):
    """The warmup reads and writes the MAX cache MODULAR_CACHE_DIR names, it holds every graph
    afterwards, and an app started on it has them all within seconds."""
    cache_root = tmp_path / "modular"
    shutil.copytree(modular_cache_root(), cache_root, symlinks=True)
    output, seconds, status, graphs_after_warmup = warmup_then_start_app(cache_root, tmp_path)
    print(output)
    assert graphs_after_warmup, "no compiled graph in the cache after the warmup"
    assert compiled_graph_files(cache_root) == graphs_after_warmup, "the app compiled a graph the warmup had not"
    check_warm_start(status, seconds)


# -- the deployment files --------------------------------------------------


def haproxy_setting(keyword: str) -> str:
    """The rest of the one line of deploy/haproxy.cfg that starts with ``keyword``."""
    lines = [line.strip() for line in (REPO / "deploy" / "haproxy.cfg").read_text().splitlines()]
    found = [line[len(keyword) :].strip() for line in lines if line.startswith(keyword + " ")]
    assert len(found) == 1, f"{keyword}: {found}"
    return found[0]


@needs_haproxy
def test_haproxy_accepts_the_configuration(tmp_path):
    """The committed files, and the replicas file the try-out writes for three replicas."""
    committed = subprocess.run(
        [HAPROXY, "-c", "-f", "deploy/haproxy.cfg", "-f", "deploy/replicas.cfg"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert committed.returncode == 0, committed.stdout + committed.stderr
    three = tmp_path / "replicas.cfg"
    three.write_text(replicas_config([("app1", 7861), ("app2", 7862), ("app3", 7863)]))
    written = subprocess.run(
        [HAPROXY, "-c", "-f", "deploy/haproxy.cfg", "-f", str(three)], cwd=REPO, capture_output=True, text=True
    )
    assert written.returncode == 0, written.stdout + written.stderr


def test_health_checks_ask_what_the_probe_asks():
    """HAProxy's check, the Kubernetes probe (deploy/replica_ready.py) and the cookie names agree."""
    assert haproxy_setting("http-check expect") == f'string "{replica_ready.READY_MARK}"'
    assert "uri /gradio_api/run/status " in haproxy_setting("http-check send")
    cookie_name = haproxy_setting("cookie").split()[0]

    deployment, service, ingress = yaml.safe_load_all((REPO / "deploy" / "kubernetes.yaml").read_text())
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    (port,) = container["ports"]
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    probe = container["readinessProbe"]["exec"]["command"]
    assert probe[1] == "deploy/replica_ready.py" and (REPO / probe[1]).is_file()
    assert probe[2] == f"http://127.0.0.1:{port['containerPort']}"
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": service["metadata"]["name"], "port": {"name": service["spec"]["ports"][0]["name"]}}
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/affinity"] == "cookie"
    assert annotations["nginx.ingress.kubernetes.io/session-cookie-name"] == cookie_name

    # The container listens where the manifest and the Space expect it.
    dockerfile = (REPO / "Dockerfile").read_text()
    assert f"EXPOSE {port['containerPort']}" in dockerfile
    assert f'"--port", "{port["containerPort"]}"' in dockerfile


# -- two replicas behind HAProxy --------------------------------------------


def server_status(school: LocalSchool) -> dict[str, str]:
    """HAProxy's view of each replica: name -> UP / DOWN / ..., from its stats page's CSV."""
    with urllib.request.urlopen(school.stats_url + ";csv", timeout=5) as response:
        text = response.read().decode().lstrip("# ")
    return {
        row["svname"]: row["status"]
        for row in csv.DictReader(io.StringIO(text))
        if row["pxname"] == "replicas" and row["svname"] not in ("FRONTEND", "BACKEND")
    }


def wait_for_status(school: LocalSchool, wanted: dict[str, str], timeout_s: float) -> float:
    started = time.monotonic()
    while True:
        status = server_status(school)
        if all(status.get(name, "").startswith(state) for name, state in wanted.items()):
            return time.monotonic() - started
        assert time.monotonic() - started < timeout_s, f"HAProxy's view: {status}, wanted {wanted}"
        time.sleep(0.5)


def servers_of(log_text: str, session_hash: str) -> set[str]:
    """The replicas HAProxy sent a session's event streams to (its httplog: backend/server, then
    the request line with ?session_hash=...)."""
    return set(re.findall(rf"replicas/(\w+) .*session_hash={session_hash}", log_text))


def start_school(tmp_path: Path, monkeypatch) -> LocalSchool:
    """Two replicas of the tiny model and HAProxy on free loopback ports (a context manager)."""
    for name, value in app_env(modular_cache_root(), tmp_path).items():
        monkeypatch.setenv(name, value)
    port = free_ports(4)  # HAProxy, its two replicas, its status page
    return LocalSchool(
        2, port=port, stats_port=port + 3, model=TINY_REPO_ID, workdir=tmp_path / "school", python=PYTHON
    )


def wait_until_serving(school: LocalSchool) -> None:
    seconds = school.wait_until_ready(REPLICAS_READY_S)
    wait_for_status(school, {"app1": "UP", "app2": "UP"}, FAILOVER_S)
    print(f"both replicas ready {seconds:.1f} s after the wait began")


def replica(school: LocalSchool, name: str):
    return next(r for r in school.replicas if r.name == name)


def run_args(client, text: str) -> list:
    """A Run of ``text`` on the tiny model, as the API takes it: any later input of the Run (the
    compare prompt) left empty."""
    parameters = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/run"]["parameters"]
    return [text, TINY_REPO_ID, *[""] * (len(parameters) - 2)]


def run(client, text: str) -> str:
    """The student's Run; -> the note under the prompt."""
    return str(client.predict(*run_args(client, text), api_name="/run"))


def tab_view(client, tab: str = "tokenize") -> str:
    """A tab as the student's session draws it from its Run (the Tokenize tab: every token with its
    id). A tab already drawn for this Run comes back unchanged: only a new Run or a tab not yet
    opened shows what the session holds."""
    return str(client.predict(api_name=f"/render_{tab}"))


def assert_own_tokens(shown: str, own: str, others: list[str]) -> None:
    """``shown`` holds the student's own signature token, and no other student's."""
    assert f"␣{own}" in shown, f"{own} not in its Tokenize view: {shown[:300]}"
    assert not [w for w in others if f"␣{w}" in shown], f"another student's token in {own}'s view"


# Each student's prompt holds one word that is a single GPT-2 token and in no other prompt.
CLASS = {
    "ada": ("Ada watched the rocket climb", "rocket"),
    "ben": ("Ben tuned his violin slowly", "violin"),
    "cho": ("Cho drew a castle on the wall", "castle"),
    "dev": ("Dev saw a comet last night", "comet"),
}


@needs_haproxy
def test_two_replicas_keep_each_student_on_its_replica(tmp_path, monkeypatch):
    """API level (gradio_client sessions, which keep the affinity cookie as a browser does): both
    replicas take students, each student's Run and Tokenize view are its own and stay on its
    replica; one replica dies as a student presses Run (that Run gets HAProxy's 502 in words, or is
    sent again to the other replica and works there), its students' next Run works on the other
    replica with their own text, and the other replica's students keep their Runs and Run on."""
    from gradio_client import Client

    with start_school(tmp_path, monkeypatch) as school:
        wait_until_serving(school)
        clients = {
            who: Client(school.url, verbose=False, download_files=False, analytics_enabled=False) for who in CLASS
        }
        replica_of = {who: client.cookies.get("EXPLORER_REPLICA") for who, client in clients.items()}
        assert set(replica_of.values()) == {"app1", "app2"}, f"the students' replicas: {replica_of}"

        def words_but(who: str) -> list[str]:
            return [word for other, (_, word) in CLASS.items() if other != who]

        for who, client in clients.items():
            note = run(client, CLASS[who][0])
            assert "Live" in note, note
        for who, client in clients.items():
            assert_own_tokens(tab_view(client), CLASS[who][1], words_but(who))
        log = school.haproxy_log.read_text()
        for who, client in clients.items():
            assert servers_of(log, client.session_hash) == {replica_of[who]}, (
                f"{who}: {servers_of(log, client.session_hash)}"
            )

        # One replica freezes with a Run on its way in, then dies: the Run had no answer.
        dead = replica_of["ada"]
        survivor = next(name for name in ("app1", "app2") if name != dead)
        on_dead = [who for who in CLASS if replica_of[who] == dead]
        on_survivor = [who for who in CLASS if replica_of[who] == survivor]
        assert on_dead and on_survivor, replica_of
        process = replica(school, dead).process
        process.send_signal(signal.SIGSTOP)
        pressed = time.monotonic()
        job = clients[on_dead[0]].submit(*run_args(clients[on_dead[0]], CLASS[on_dead[0]][0]), api_name="/run")
        time.sleep(1.0)
        process.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        # HAProxy sends it again to the other replica when the dead one closed the connection (the
        # Run then works); when it reset the connection, as a frozen process does, HAProxy 2.6 does
        # not, and the answer is its 502, in words (deploy/haproxy.cfg's http-error).
        try:
            note = str(job.result(timeout=120))
            assert "Live" in note, note
            print(f"a Run pressed as its replica died: sent again, answered {time.monotonic() - pressed:.1f} s after")
        except httpx.HTTPStatusError as error:
            assert error.response.status_code == 502, error
            assert "stopped before it answered" in error.response.json()["detail"], error.response.text
            print(f"a Run pressed as its replica died: 502 with {error.response.json()}")
        wait_for_status(school, {dead: "DOWN", survivor: "UP"}, FAILOVER_S)
        print(f"HAProxy took {dead} out {time.monotonic() - killed:.1f} s after the kill (or less)")

        # The survivor's students: their Runs are still theirs (a tab they had not opened draws
        # them), and they Run on.
        for who in on_survivor:
            assert_own_tokens(tab_view(clients[who], "embed"), CLASS[who][1], words_but(who))
            note = run(clients[who], "Then " + CLASS[who][0])
            assert "Live" in note, note
            assert_own_tokens(tab_view(clients[who]), CLASS[who][1], words_but(who))
        # The dead replica's students: their next Run works on the survivor, with their own text.
        for who in on_dead:
            note = run(clients[who], CLASS[who][0])
            assert "Live" in note, note
            assert_own_tokens(tab_view(clients[who]), CLASS[who][1], words_but(who))
        log = school.haproxy_log.read_text()
        for who in on_dead:
            assert servers_of(log, clients[who].session_hash) == {dead, survivor}, who
        for who in on_survivor:
            assert servers_of(log, clients[who].session_hash) == {survivor}, who


CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = REPO / "artifacts" / "screenshots"
PAGE_TIMEOUT_MS = 60_000
# A page whose replica died: from the kill to the banner that says so (the heartbeat breaks at
# once; the page then asks the balancer which server answers, which redispatches after retries).
MESSAGE_S = 20.0


@needs_haproxy
def test_a_page_whose_replica_dies_says_so_and_runs_on_the_other(tmp_path, monkeypatch):
    """In Chromium, three students: two on one replica, one on the other. The first one's replica
    takes its Run and dies before answering. Both of its students' pages say what happened and what
    to do (components/reconnect.py's banner: no Gradio "Connection" toast, no reload, the prompt
    typed is still there), the one that was idle too; the next Run of each works on the other
    replica, where the tab on screen draws it at once and every other tab when opened. The other
    replica's student sees nothing of this and Runs on."""
    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed at /usr/bin/chromium (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
    from test_browser import PLOT_WITH_WORD, TABS, open_tab, run_prompt

    from components import reconnect

    banner = f"#{reconnect.BANNER_ID}"
    # Who, their replica, their prompt, its signature word (a single token), the tab they look at.
    students = {
        "pressing": ("app1", "A lighthouse stood by the river", "lighthouse", "Attention"),
        "idle": ("app1", "A comet crossed the harbour", "harbour", "Blocks"),
        "other": ("app2", "An orchestra played near the volcano", "orchestra", "Attention"),
    }
    retyped = {"pressing": ("The dragon slept in a cathedral", "cathedral"), "idle": ("A violin in a castle", "violin")}

    def shows(page, word: str) -> None:
        try:
            page.wait_for_function(PLOT_WITH_WORD, arg=[word], timeout=PAGE_TIMEOUT_MS, polling=250)
        except sync_api.TimeoutError:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / f"replica-{word}-failed.png"), full_page=True)
            pytest.fail(f"no plot on screen shows {word!r} (artifacts/screenshots/replica-{word}-failed.png)")

    with start_school(tmp_path, monkeypatch) as school, sync_api.sync_playwright() as playwright:
        wait_until_serving(school)
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"], timeout=60_000
        )
        pages = {}
        for who, (name, text, word, tab) in students.items():
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.set_default_timeout(PAGE_TIMEOUT_MS)
            # A student whose first answer came from this replica (HAProxy's cookie names it).
            context.add_cookies([{"name": "EXPLORER_REPLICA", "value": name, "url": school.url}])
            page = pages[who] = context.new_page()
            page.goto(school.url)
            sync_api.expect(page.locator("#model-status")).to_contain_text("ready", timeout=PAGE_TIMEOUT_MS)
            run_prompt(page, text)
            sync_api.expect(page.locator("#run-note")).to_contain_text("Live", timeout=PAGE_TIMEOUT_MS)
            open_tab(page, tab)
            shows(page, word)
            page.evaluate("window.__notReloaded = true")

        # The pressing student types a new prompt and presses Run; the replica takes the Run and
        # dies before answering. The idle one has typed a new prompt and not pressed Run yet.
        killed = []

        def take_then_die(route):
            answer = route.fetch()
            process = replica(school, "app1").process
            process.send_signal(signal.SIGKILL)
            process.wait()
            killed.append(time.monotonic())
            route.fulfill(response=answer)

        pages["idle"].locator("#prompt textarea").fill(retyped["idle"][0])
        pages["pressing"].route("**/gradio_api/queue/join*", take_then_die, times=1)
        run_prompt(pages["pressing"], retyped["pressing"][0])
        told = {}
        for who in retyped:
            page = pages[who]
            sync_api.expect(page.locator(banner)).to_contain_text("has stopped", timeout=MESSAGE_S * 1000)
            told[who] = time.monotonic() - killed[0]
            assert page.locator(banner).inner_text().startswith(reconnect.MOVED[:40])
            assert page.evaluate("window.__notReloaded === true"), f"{who}'s page was reloaded"
            assert page.locator("#prompt textarea").input_value() == retyped[who][0]
            toasts = page.locator(".toast-body").all_inner_texts()
            assert not [t for t in toasts if "onnection" in t or "Traceback" in t], toasts
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        pages["pressing"].screenshot(path=str(SCREENSHOTS / "replica-stopped.png"))
        wait_for_status(school, {"app1": "DOWN", "app2": "UP"}, FAILOVER_S)
        down_s = time.monotonic() - killed[0]

        # Their next Run works on the other replica: the tab on screen draws it, then every tab;
        # the banner says it worked and goes.
        rerun_s = {}
        for who, (text, word) in retyped.items():
            page = pages[who]
            started = run_prompt(page, text)
            sync_api.expect(page.locator("#run-note")).to_contain_text("Live", timeout=PAGE_TIMEOUT_MS)
            sync_api.expect(page.locator(banner)).to_contain_text("new server", timeout=PAGE_TIMEOUT_MS)
            shows(page, word)
            rerun_s[who] = time.perf_counter() - started
        for who, (_, word) in retyped.items():
            page = pages[who]
            for tab in TABS:
                open_tab(page, tab)
                shows(page, word)
            sync_api.expect(page.locator(banner)).to_have_count(0, timeout=PAGE_TIMEOUT_MS)
            assert {c["value"] for c in page.context.cookies() if c["name"] == "EXPLORER_REPLICA"} == {"app2"}

        # The other replica's student: nothing happened.
        other = pages["other"]
        assert other.locator(banner).count() == 0
        assert other.locator(".toast-body").count() == 0
        assert other.evaluate("window.__notReloaded === true")
        shows(other, students["other"][2])
        run_prompt(other, "The piano rolled down the hill")
        shows(other, "piano")
        browser.close()
        print(
            f"kill -> the message on the pressing page {told['pressing']:.1f} s, on the idle page "
            f"{told['idle']:.1f} s or less; kill -> HAProxy's DOWN {down_s:.1f} s or less; their next Run -> "
            f"the tab on screen drawn: {rerun_s['pressing']:.1f} s, {rerun_s['idle']:.1f} s"
        )
