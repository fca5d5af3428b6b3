"""Stopping an app started as a subprocess: what the browser test, the screenshot script and the
classroom benchmark each do when they are done with their server."""

from __future__ import annotations

import subprocess


def stop_app(process: subprocess.Popen, timeout_s: float = 20.0) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within ``timeout_s``."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout_s)
