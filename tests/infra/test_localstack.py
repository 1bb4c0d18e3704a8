"""localstack/: the compose file pins the last Community image that needs no auth token, and the ready hook
provisions with the project's own Provisioner (run here against moto: no Docker on this machine)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from rtrec.resources import BUCKETS, QUEUES, STREAMS, TABLES
from rtrec_local.cloud import free_port

LOCALSTACK = Path(__file__).resolve().parents[2] / "localstack"
HOOK = LOCALSTACK / "init" / "ready.d" / "10-provision.sh"


def test_compose_pins_the_last_community_image_without_auth_token():
    compose = (LOCALSTACK / "docker-compose.yml").read_text()
    assert re.findall(r"^\s*image:\s*(\S+)", compose, re.M) == ["localstack/localstack:4.14.0"]
    assert "./init/ready.d:/etc/localstack/init/ready.d" in compose
    assert "../layers/core/rtrec:/opt/rtrec/rtrec:ro" in compose
    assert "LOCALSTACK_AUTH_TOKEN" not in re.sub(r"#.*", "", compose)


def test_ready_hook_is_valid_bash():
    assert HOOK.stat().st_mode & 0o111
    subprocess.run(["bash", "-n", str(HOOK)], check=True)


def test_ready_hook_provisions_every_resource_with_the_projects_provisioner():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        script = HOOK.read_text().split("<<'PY'\n", 1)[1].split("\nPY\n", 1)[0]
        script = script.replace("http://localhost:4566", f"http://localhost:{port}")
        core = Path(__file__).resolve().parents[2] / "layers" / "core"
        result = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=120,
            env={"PYTHONPATH": str(core), "RTREC_PREFIX": "lstest", "PATH": "/usr/bin:/bin"},
        )
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr[-2000:]
    created = result.stdout.split("created ", 1)[1].split(";", 1)[0].split(", ")
    assert len(created) == len(TABLES) + len(STREAMS) + len(BUCKETS) + len(QUEUES)
    assert all(":lstest-" in name for name in created)
