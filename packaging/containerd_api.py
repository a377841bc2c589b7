"""containerd's API, described for the agent: a protobuf descriptor set made from
containerd's own .proto files when the package is built (setup.py calls ``build``).

The agent talks to containerd with grpclib and builds its messages from this description
at run time (``hsflowd.virt.containerdapi``), so nothing generated is kept in the source
tree and the description fits any protobuf runtime from Debian 12's 3.21 on.  The .proto
files are Debian's golang-github-containerd-containerd-dev (under /usr/share/gocode/src,
with the gogoproto and well-known types it imports); protoc is Debian's protobuf-compiler
or grpcio-tools' (``python -m grpc_tools.protoc``).  Without either, the package is built
without it and containerd {} and k8s {} say so when they start.

Run by hand: ``python3 packaging/containerd_api.py [OUT] [PROTO_ROOT]``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import List, Optional

PROTO_ROOT = "/usr/share/gocode/src"          # Debian's Go source tree
API = "github.com/containerd/containerd/api"
# the services the agent calls, and the events it reads
PROTOS = ("services/namespaces/v1/namespace.proto", "services/containers/v1/containers.proto",
          "services/tasks/v1/tasks.proto", "services/events/v1/events.proto",
          "services/version/v1/version.proto", "events/task.proto", "events/container.proto")
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "hsflowd", "data",
                   "containerd-api.pb")


def protoc() -> Optional[List[str]]:
    """The protoc to run: grpcio-tools' if it is installed, else one on PATH."""
    try:
        import grpc_tools  # noqa: F401
        return [sys.executable, "-m", "grpc_tools.protoc"]
    except ImportError:
        path = shutil.which("protoc")
        return [path] if path else None


def includes(root: str) -> List[str]:
    """Where the imports are: containerd's tree, gogoproto, and the well-known types."""
    gogo = os.path.join(root, "github.com/gogo/protobuf")
    dirs = [root, gogo, os.path.join(gogo, "protobuf")]
    try:
        import grpc_tools
        dirs.append(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))
    except ImportError:
        dirs.append("/usr/include")
    return [d for d in dirs if os.path.isdir(d)]


def build(out: str = OUT, root: Optional[str] = None) -> Optional[str]:
    """Write the descriptor set to ``out``; None if it was made, else why not (one line)."""
    root = root or os.environ.get("HSFLOWD_CONTAINERD_PROTOS") or PROTO_ROOT
    sources = [os.path.join(root, API, p) for p in PROTOS]
    missing = [s for s in sources if not os.path.exists(s)]
    if missing:
        return (f"containerd's .proto files are not under {root} (apt-get install "
                "golang-github-containerd-containerd-dev)")
    command = protoc()
    if command is None:
        return "no protoc (apt-get install protobuf-compiler, or pip install grpcio-tools)"
    os.makedirs(os.path.dirname(out), exist_ok=True)
    run = subprocess.run(command + [f"-I{d}" for d in includes(root)]
                         + ["--include_imports", f"--descriptor_set_out={out}"] + sources,
                         capture_output=True, text=True)
    if run.returncode != 0:
        return f"protoc failed: {run.stderr.strip().splitlines()[-1:]}"
    return None


if __name__ == "__main__":
    why = build(*sys.argv[1:3])
    if why:
        sys.exit(why)
