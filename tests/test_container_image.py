"""The agent's image (packaging/container) built by a dockerd of the test's own with no
registry, and run as packaging/kubernetes/hsflowd.yaml runs it: the environment, the
capabilities, the host's network and PID namespaces and the mounts are read from that file
(the DaemonSet and its ConfigMap: its seccomp profile too), so the two cannot drift.  Only what points at this test's
world is replaced: the collector (a receiver on 127.0.0.1), the polling interval (2 s, to be
quick) and the containerd socket mounted (the test's own containerd, whose pod the agent
must report).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

import containerd_tools as ct
from agentproc import receivers, records_by_tag, samples_from  # noqa: F401

pytestmark = [pytest.mark.netns, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
MANIFEST = REPO / "packaging" / "kubernetes" / "hsflowd.yaml"
BUILD = REPO / "packaging" / "container" / "build.sh"
DOCKER_CLI = "/usr/bin/docker"       # Debian's, which speaks to 20.10 (not /usr/local/bin's)
CONTAINERD_SOCKET = "/run/containerd/containerd.sock"
MAX_IMAGE_BYTES = 200 << 20


def manifest() -> Dict:
    """The DaemonSet's pod spec and its ConfigMap's data."""
    import yaml
    docs = list(yaml.safe_load_all(MANIFEST.read_text()))
    daemonset = next(d for d in docs if d["kind"] == "DaemonSet")
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    return {"pod": daemonset["spec"]["template"]["spec"], "config": config["data"]}


def run_args(m: Dict, overrides: Dict[str, str], host_paths: Dict[str, str]) -> List[str]:
    """``docker run`` options for the manifest's pod: namespaces, capabilities, env, mounts."""
    pod = m["pod"]
    container = pod["containers"][0]
    args: List[str] = []
    if pod.get("hostNetwork"):
        args += ["--network", "host"]
    if pod.get("hostPID"):
        args += ["--pid", "host"]
    security = container.get("securityContext", {})
    assert not security.get("privileged"), "the manifest asks for privileged"
    # dockerd's default seccomp profile is its RuntimeDefault (containerd's has the same
    # rules for these capabilities: setns, bpf and perf_event_open with CAP_SYS_ADMIN)
    seccomp = security.get("seccompProfile", {}).get("type", "Unconfined")
    assert seccomp in ("RuntimeDefault", "Unconfined"), seccomp
    if seccomp == "Unconfined":
        args += ["--security-opt", "seccomp=unconfined"]
    for cap in security.get("capabilities", {}).get("drop", []):
        args += ["--cap-drop", cap]
    for cap in security.get("capabilities", {}).get("add", []):
        args += ["--cap-add", cap]
    env: Dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert source["configMapRef"]["name"] == "hsflowd"
        env.update(m["config"])
    env.update({e["name"]: e["value"] for e in container.get("env", [])})
    env.update(overrides)
    for name, value in env.items():
        args += ["--env", f"{name}={value}"]
    volumes = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"]}
    for mount in container["volumeMounts"]:
        host = volumes[mount["name"]]
        args += ["--volume", f"{host_paths.get(host, host)}:{mount['mountPath']}"
                 + (":ro" if mount.get("readOnly") else "")]
    return args


def why_not() -> str:
    """Why the image cannot be built and run here ("" if it can)."""
    if not shutil.which("mmdebstrap"):
        return "mmdebstrap is missing (apt-get install mmdebstrap)"
    if not os.path.exists(DOCKER_CLI):
        return f"{DOCKER_CLI} is missing (apt-get install docker.io)"
    return ct.why_not() or ""


def docker(d, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run([DOCKER_CLI, "-H", d.url, *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "DOCKER_BUILDKIT": "0"})
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def test_image_runs_as_the_manifest_says(dockerd, receivers):  # noqa: F811
    """The run's dockerd (tests/conftest.py) builds the image; the images go at the end."""
    why = why_not()
    if why:
        pytest.skip(f"the image cannot be built here: {why}")
    image, base = "hsflowd:test", f"hsft-base-{os.getpid()}:bookworm"
    try:
        _build_and_run(dockerd, receivers, image, base)
    finally:
        docker(dockerd, "rmi", "--force", image, base, check=False)


def _build_and_run(dockerd, receivers, image: str, base: str) -> None:  # noqa: F811
    built = subprocess.run(["sh", str(BUILD), image], capture_output=True, text=True,
                           timeout=600, env={**os.environ, "DOCKER_BUILDKIT": "0",
                                             "DOCKER": f"{DOCKER_CLI} -H {dockerd.url}",
                                             "BASE": base, "PYTHON": sys.executable})
    assert built.returncode == 0, built.stderr
    size = int(docker(dockerd, "image", "inspect", "--format", "{{.Size}}", image).stdout)
    print(f"\nimage {image}: {size / 1e6:.1f} MB")
    assert size < MAX_IMAGE_BYTES

    ctd = ct.Containerd()
    node = ct.Node(f"hsfti{os.getpid() % 10000}")
    name = f"hsft-agent-{os.getpid()}"
    try:
        ctd.start()
        pod = node.make_pod(ctd, "img-0", "default")
        r = receivers()
        args = run_args(manifest(), {"COLLECTOR": "127.0.0.1", "PORT": str(r.port),
                                     "POLLING": "2"},
                        {CONTAINERD_SOCKET: str(ctd.socket)})
        assert "--network" in args and "--pid" in args and "--cap-add" in args
        docker(dockerd, "run", "--detach", "--name", name, *args, image)

        def pod_samples():
            return [s for rr in r.received for s in rr.datagram.samples
                    if getattr(s, "source_id_type", None) == 3
                    and records_by_tag(s)[2000].hostname == "k8s__img-0_default_u_a"]
        r.collect(20, until=lambda _got: len(pod_samples()) >= 2)
        logs = docker(dockerd, "logs", name, check=False)
        found = pod_samples()
        assert len(found) >= 2, logs.stdout + logs.stderr
        rec = records_by_tag(found[-1])
        assert rec[2101].state == 1 and rec[2101].cpuTime > 0      # the node's cgroups
        assert [a.ifIndex for a in rec[2001].adapters] == \
            [int(pod.netns.run(["cat", "/sys/class/net/eth0/ifindex"]).stdout)]
        assert any(samples_from(r.received, (2, 1)))
        assert "Sending sFlow to 127.0.0.1" in logs.stdout
        assert "Traceback" not in logs.stderr
    finally:
        docker(dockerd, "rm", "--force", name, check=False)
        node.close(ctd)
        ctd.stop()
