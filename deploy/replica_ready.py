"""Whether one replica of the explorer can take students: exit 0 when its model answers Runs.

    python deploy/replica_ready.py http://127.0.0.1:7860

It asks what HAProxy's health check asks (deploy/haproxy.cfg): the app's own status call, the one
the page's status line polls, whose text names the model as "`<model>` ready" once its trace graph
is compiled. The Kubernetes readiness probe (deploy/kubernetes.yaml) runs this file; it needs only
the standard library.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

# What the status text holds once the model is ready; deploy/haproxy.cfg's `http-check expect`
# looks for the same (tests/test_deploy.py holds the two together).
READY_MARK = "` ready"


def status(url: str, timeout_s: float = 5.0) -> str:
    """The replica's status text for its default model (raises OSError when it does not answer)."""
    request = urllib.request.Request(
        url.rstrip("/") + "/gradio_api/run/status",
        data=json.dumps({"data": [None]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return str(json.load(response)["data"][0])


def is_ready(url: str, timeout_s: float = 5.0) -> bool:
    try:
        return READY_MARK in status(url, timeout_s)
    except (OSError, ValueError, KeyError, IndexError):
        return False


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(0 if is_ready(sys.argv[1]) else 1)
