"""A DNS server for DNS-SD tests: dnsmasq inside a test namespace, serving _sflow._udp SRV
and TXT records for a test domain, and the namespace's own resolv.conf.

``ip netns exec NS`` bind-mounts /etc/netns/NS/resolv.conf over /etc/resolv.conf for the
command it runs, so an agent started that way asks this dnsmasq; the root namespace's
/etc/resolv.conf is never touched.  /etc/netns/NS is removed again by ``close()``, and
dnsmasq is stopped by its PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence, Tuple

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"


def have_dnsmasq() -> bool:
    return os.access(DNSMASQ, os.X_OK)


class NamespaceDns:
    """resolv.conf for namespace ``ns`` and a dnsmasq there answering for ``domain``."""

    def __init__(self, ns, domain: str = "example.test", listen: str = "127.0.0.1",
                 search: Optional[str] = None):
        self.ns = ns
        self.domain = domain
        self.listen = listen
        self.proc: Optional[subprocess.Popen] = None
        self.etc = Path("/etc/netns") / ns.name
        self._made_parent = not Path("/etc/netns").exists()
        self.etc.mkdir(parents=True, exist_ok=False)
        lines = [f"nameserver {listen}", "options timeout:1 attempts:1"]
        if search is not None:
            lines.append(f"search {search}")
        (self.etc / "resolv.conf").write_text("\n".join(lines) + "\n")
        self.log = Path(f"/tmp/{ns.name}-dnsmasq.log")

    def start(self, srv: Iterable[Tuple[str, int]] = (), txt: Sequence[str] = (),
              hosts: Optional[Dict[str, str]] = None, ttl: int = 10,
              domain: Optional[str] = None) -> "NamespaceDns":
        """Serve SRV records (target, port) and one TXT record of ``txt`` strings under
        _sflow._udp.<domain> (default: this one's), and A records ``hosts``.  Names under
        the domain and this one that are not served are NXDOMAIN."""
        self.stop()
        name = f"_sflow._udp.{domain or self.domain}"
        locals_ = {self.domain, domain or self.domain}
        args = [DNSMASQ, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
                "--no-hosts", "--bind-interfaces", f"--listen-address={self.listen}",
                "--port=53", *[f"--local=/{d}/" for d in sorted(locals_)], f"--local-ttl={ttl}",
                "--user=root", "--group=root", "--pid-file=", f"--log-facility={self.log}",
                "--log-queries"]
        for target, port in srv:
            args.append(f"--srv-host={name},{target},{port}")
        if txt:
            args.append("--txt-record=" + ",".join([name, *txt]))   # no commas in the strings
        for host, address in (hosts or {}).items():
            args.append(f"--host-record={host},{address}")
        self.proc = self.ns.popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:   # up when it answers on port 53
            if self.proc.poll() is not None:
                raise RuntimeError(f"dnsmasq exited: {self.proc.stderr.read().decode()}")
            if self.ns.run(["ss", "-Hlun", f"sport = :53"], check=False).stdout.strip():
                return self
            time.sleep(0.05)
        raise RuntimeError("dnsmasq did not start listening")

    def queries(self, qtype: str = "SRV") -> int:
        """How many queries of ``qtype`` dnsmasq has logged so far."""
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return 0
        return sum(1 for line in text.splitlines() if f"query[{qtype}]" in line)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.etc, ignore_errors=True)
        if self._made_parent:
            try:
                os.rmdir("/etc/netns")
            except OSError:
                pass
        try:
            self.log.unlink()
        except FileNotFoundError:
            pass
