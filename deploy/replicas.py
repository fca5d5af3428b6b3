"""Try-out of a school on one machine: N replicas of the explorer behind HAProxy.

    python deploy/replicas.py --replicas 2 [--port 7860] [--model ID] [--public]
    bash run.sh replicas 2 [--model ID]          # the same, after setting up .venv

Starts ``app.py`` N times on loopback (ports PORT+1 ... PORT+N), writes HAProxy's replicas file
for them, starts ``haproxy -f deploy/haproxy.cfg -f <that file>`` listening on PORT (with
--public on every interface, else on loopback), waits until every replica's model is ready,
prints where to go, and stops everything on Ctrl-C. The replicas' logs, their example caches and
the replicas file go to --workdir (default: a new temporary directory, printed). Every app setting
(GPT2_EXPLORER_*, HF_HUB_CACHE, MODULAR_CACHE_DIR) is taken from the environment; run
``python -m gpt2_max warmup`` first so that the replicas find their graphs compiled.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HAPROXY_CONFIG = REPO / "deploy" / "haproxy.cfg"
sys.path.insert(0, str(REPO / "deploy"))

from replica_ready import is_ready  # noqa: E402

STOP_TIMEOUT_S = 20.0


@dataclass
class Replica:
    name: str  # also its cookie value: EXPLORER_REPLICA=<name> routes a browser to it
    port: int
    process: subprocess.Popen
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def log_tail(self, characters: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-characters:]


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports on loopback: HAProxy's, then its replicas' (a
    school on free ports, as the tests and the classroom benchmark start one)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = probe.getsockname()[1]
        if first + count > 65536:
            continue
        try:
            with contextlib.ExitStack() as taken:
                for port in range(first, first + count):
                    taken.enter_context(socket.socket()).bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
    raise RuntimeError(f"no {count} consecutive free ports on loopback")


def replicas_config(replicas: list[tuple[str, int]]) -> str:
    """HAProxy's backend for replicas on loopback: one server line each, its cookie its name."""
    lines = ["backend replicas"]
    lines += [f"    server {name} 127.0.0.1:{port} cookie {name}" for name, port in replicas]
    return "\n".join(lines) + "\n"


def stop(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it has not exited within STOP_TIMEOUT_S."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)


class LocalSchool:
    """N app processes and one HAProxy in front of them, all on this machine; a context manager
    that stops them all on exit."""

    def __init__(
        self,
        replicas: int,
        port: int = 7860,
        stats_port: int = 8404,
        model: str | None = None,
        public: bool = False,
        workdir: Path | None = None,
        python: str = sys.executable,
    ) -> None:
        if replicas < 1:
            raise ValueError("at least one replica")
        self.port, self.stats_port = port, stats_port
        self.url = f"http://127.0.0.1:{port}/"
        self.stats_url = f"http://127.0.0.1:{stats_port}/"
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="explorer-replicas-"))
        self.replicas: list[Replica] = []
        self.haproxy: subprocess.Popen | None = None
        self._names_ports = [(f"app{i}", port + i) for i in range(1, replicas + 1)]
        self._model, self._public, self._python = model, public, python

    def start(self) -> LocalSchool:
        haproxy = shutil.which("haproxy")
        if haproxy is None:
            raise RuntimeError("haproxy is not installed (Debian: apt-get install -y haproxy)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        for name, port in self._names_ports:
            replica_dir = self.workdir / name
            replica_dir.mkdir(exist_ok=True)
            env = {
                **os.environ,
                "GRADIO_ANALYTICS_ENABLED": "False",
                "MODULAR_TELEMETRY_ENABLED": "0",
                "PYTHONUNBUFFERED": "1",
                # Each replica saves its example traces in its own place: two processes writing
                # one file at once could leave it torn.
                "GPT2_EXPLORER_CACHE_DIR": str(replica_dir / "explorer-cache"),
            }
            command = [self._python, "app.py", "--host", "127.0.0.1", "--port", str(port)]
            if self._model:
                command += ["--model", self._model]
            log_path = replica_dir / "app.log"
            with open(log_path, "wb") as log:
                process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
            self.replicas.append(Replica(name, port, process, log_path))
        servers = self.workdir / "replicas.cfg"
        servers.write_text(replicas_config(self._names_ports))
        listen = f"{'*' if self._public else '127.0.0.1'}:{self.port}"
        env = {**os.environ, "EXPLORER_LISTEN": listen, "EXPLORER_STATS": f"127.0.0.1:{self.stats_port}"}
        self.haproxy_log = self.workdir / "haproxy.log"
        with open(self.haproxy_log, "wb") as log:
            # -db: stay in the foreground (stopped with the replicas), logging to stdout.
            self.haproxy = subprocess.Popen(
                [haproxy, "-db", "-f", str(HAPROXY_CONFIG), "-f", str(servers)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def wait_until_ready(self, timeout_s: float) -> float:
        """Seconds until every replica's model is ready; raises if one exits or time runs out."""
        started = time.monotonic()
        waiting = list(self.replicas)
        while waiting:
            for replica in list(waiting):
                if replica.process.poll() is not None:
                    raise RuntimeError(
                        f"{replica.name} exited with {replica.process.returncode}:\n{replica.log_tail()}"
                    )
                if is_ready(replica.url):
                    waiting.remove(replica)
            if self.haproxy is not None and self.haproxy.poll() is not None:
                raise RuntimeError(
                    f"haproxy exited with {self.haproxy.returncode}:\n{self.haproxy_log.read_text()[-3000:]}"
                )
            if waiting and time.monotonic() - started > timeout_s:
                names = ", ".join(r.name for r in waiting)
                raise RuntimeError(f"{names} not ready within {timeout_s:.0f} s:\n{waiting[0].log_tail()}")
            if waiting:
                time.sleep(1.0)
        return time.monotonic() - started

    def stop(self) -> None:
        if self.haproxy is not None:
            stop(self.haproxy)
        for replica in self.replicas:
            stop(replica.process)

    def __enter__(self) -> LocalSchool:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=2, help="how many app processes (default 2)")
    parser.add_argument("--port", type=int, default=7860, help="where HAProxy listens; replicas take the next N ports")
    parser.add_argument("--stats-port", type=int, default=8404, help="HAProxy's status page, on loopback")
    parser.add_argument("--model", default=None, help="passed to every app.py (default: the app's)")
    parser.add_argument("--public", action="store_true", help="HAProxy listens on every interface, not only loopback")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="logs and the replicas file (default: a new temporary directory)"
    )
    parser.add_argument(
        "--ready-timeout", type=float, default=1800.0, help="seconds to wait for every model (a cold cache compiles)"
    )
    args = parser.parse_args()
    school = LocalSchool(args.replicas, args.port, args.stats_port, args.model, args.public, args.workdir)
    # SIGTERM ends the try-out like Ctrl-C does: through the finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        school.start()
        print(f"{args.replicas} replicas starting; logs in {school.workdir}", flush=True)
        seconds = school.wait_until_ready(args.ready_timeout)
        print(f"every replica ready after {seconds:.1f} s", flush=True)
        print(f"explorer:      {school.url}", flush=True)
        print(f"HAProxy stats: {school.stats_url}", flush=True)
        print("Ctrl-C stops HAProxy and the replicas.", flush=True)
        # A replica that exits is reported and left down (HAProxy's health check sends its
        # browsers to the others): that is how a replica's failure can be tried out here.
        reported: set[str] = set()
        while school.haproxy.poll() is None:
            for replica in school.replicas:
                if replica.process.poll() is not None and replica.name not in reported:
                    reported.add(replica.name)
                    print(
                        f"{replica.name} exited with {replica.process.returncode}; log: {replica.log_path}", flush=True
                    )
            time.sleep(1.0)
        print(f"haproxy exited with {school.haproxy.returncode}; log: {school.haproxy_log}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        school.stop()


if __name__ == "__main__":
    sys.exit(main())
