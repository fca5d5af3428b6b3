"""Deployment: the warmup command, the container's and Kubernetes' files, and replicas behind HAProxy.

- The warmup works on the MAX cache it is pointed at (MODULAR_CACHE_DIR) and an app started
  afterwards on that cache has every graph ready within seconds. It is given a copy of this
  machine's cache (where the suite's own compiles put the tiny graphs): into an empty cache it would
  compile three graphs cold, minutes each here; deploy/dockerfile_dry_run.py does that (docs/deploy.md).
- Two replicas and HAProxy on loopback (deploy/replicas.py, what `bash run.sh replicas 2` starts):
  both replicas pass their health checks and take browsers, each browser's requests stay on the
  replica that holds its session (the affinity cookie), a Run and a tab view work through the proxy
  and show that browser's own text, and when one replica is killed its browsers' next Run works on
  the other while the other's browsers go on.

Needs Debian's haproxy (`bash run.sh test` installs it); without it the HAProxy tests skip.
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

import pytest
import yaml
from app_process import stop_app
from tiny_checkpoint import TINY_REPO_ID

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "deploy"))

import replica_ready  # noqa: E402
from replicas import LocalSchool, replicas_config  # noqa: E402

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


@needs_haproxy
def test_two_replicas_keep_each_browser_on_its_replica(tmp_path, monkeypatch):
    from gradio_client import Client

    for name, value in app_env(modular_cache_root(), tmp_path).items():
        monkeypatch.setenv(name, value)
    school = LocalSchool(
        2, port=free_port(), stats_port=free_port(), model=TINY_REPO_ID, workdir=tmp_path / "school", python=PYTHON
    )
    with school:
        seconds = school.wait_until_ready(REPLICAS_READY_S)
        wait_for_status(school, {"app1": "UP", "app2": "UP"}, FAILOVER_S)
        print(f"both replicas ready {seconds:.1f} s after the wait began")

        texts = {"first": "The tortoise crossed the meadow", "second": "A rocket left the harbour"}
        clients = {
            who: Client(school.url, verbose=False, download_files=False, analytics_enabled=False) for who in texts
        }
        replica_of = {who: client.cookies.get("EXPLORER_REPLICA") for who, client in clients.items()}
        assert set(replica_of.values()) == {"app1", "app2"}, f"the two browsers' replicas: {replica_of}"

        for who, client in clients.items():
            note = str(client.predict(texts[who], TINY_REPO_ID, api_name="/run"))
            assert "Live" in note, note

        log = school.haproxy_log.read_text()
        for who, client in clients.items():
            assert servers_of(log, client.session_hash) == {replica_of[who]}, (
                f"{who}: {servers_of(log, client.session_hash)}"
            )

        # One replica dies mid-class.
        dead = replica_of["first"]
        survivor = replica_of["second"]
        next(r for r in school.replicas if r.name == dead).process.send_signal(signal.SIGKILL)
        waited = wait_for_status(school, {dead: "DOWN", survivor: "UP"}, FAILOVER_S)
        print(f"HAProxy took {dead} out after {waited:.1f} s")
        # The survivor's browser goes on with its Run; the dead replica's browser Runs again there.
        note = str(clients["first"].predict(texts["first"], TINY_REPO_ID, api_name="/run"))
        assert "Live" in note, note
        log = school.haproxy_log.read_text()
        assert servers_of(log, clients["first"].session_hash) == {dead, survivor}
