"""Bad input to a root daemon: files it must not follow, files it must not read, numbers it
must survive.  Each gets one line naming the file or the field, never a traceback, and the
running agent keeps its last good state."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from agentproc import (agent_env, agents, config_text, hsflowd,  # noqa: F401
                       receivers, run_hsflowd)

TRACEBACK = "Traceback (most recent call last)"
# what a datagram due at the next tick, or a log line about a reload, is waited for: five
# times and more the second or so either takes
WAIT = 10.0


def start_fails(args, timeout: float = 20.0):
    res = run_hsflowd("-d", *args, timeout=timeout)
    assert res.returncode == 1, res
    assert TRACEBACK not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    return res.stderr.strip()


def test_pidfile_symlink_is_not_followed(agents):
    work = agents.workdir
    conf = work / "a.conf"
    conf.write_text(config_text([("127.0.0.1", 16391)]))
    victim = work / "victim"
    victim.write_text("precious\n")
    link = work / "a.pid"
    link.symlink_to(victim)
    line = start_fails(["-f", str(conf), "-p", str(link), "-o", str(work / "a.auto")])
    assert str(link) in line and "pid file" in line
    assert victim.read_text() == "precious\n"


def test_pidfile_of_another_user_is_refused(agents):
    work = agents.workdir
    os.chmod(work, 0o1777)     # a world-writable, sticky directory such as /tmp
    conf = work / "a.conf"
    conf.write_text(config_text([("127.0.0.1", 16391)]))
    planted = work / "a.pid"
    planted.write_text("12345\n")
    os.chown(planted, 65534, 65534)
    line = start_fails(["-f", str(conf), "-p", str(planted), "-o", str(work / "a.auto")])
    assert "owned by uid 65534" in line
    assert planted.read_text() == "12345\n"


def test_auto_file_symlink_is_not_followed(agents, receivers):
    r = receivers()
    work = agents.workdir
    victim = work / "victim"
    victim.write_text("precious\n")
    agent = agents(config_text([("127.0.0.1", r.port)], polling=1), start=False)
    agent.auto_path.symlink_to(victim)
    agent.start()
    assert r.first(WAIT) is not None                  # it runs, without the .auto file
    assert agent.wait_for_log("symbolic link", WAIT), agent.stderr()
    assert victim.read_text() == "precious\n"


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_config_that_is_not_a_regular_file(agents, kind):
    work = agents.workdir
    path = {"fifo": work / "fifo.conf", "device": "/dev/zero", "directory": work}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    # an agent that opened the FIFO would wait for a writer for ever: start_fails' timeout
    line = start_fails(["-f", str(path), "-p", str(work / "x.pid"), "-o", str(work / "x.auto")])
    assert line == f"{path}: not a regular file"


def test_reload_with_a_fifo_keeps_the_running_config(agents, receivers):
    r = receivers()
    agent = agents(config_text([("127.0.0.1", r.port)], polling=1))
    assert r.first(WAIT) is not None
    os.unlink(agent.config_path)
    os.mkfifo(agent.config_path)
    agent.signal(1)
    assert agent.wait_for_log("not a regular file; keeping the running configuration", WAIT)
    r.drain()
    assert r.first(WAIT), "it stopped sending"
    assert agent.stop() == 0        # by itself on SIGTERM: stop() kills it after 5 s (-9)
    assert TRACEBACK not in agent.stderr()


def test_ten_thousand_collectors_under_the_usual_fd_limit(agents, receivers):
    """Collectors share a socket per address family: 10,000 of them cost no more fds."""
    r = receivers()
    blocks = [f"ip = 127.0.0.1 udpport = {20000 + i}" for i in range(9999)] + [("127.0.0.1", r.port)]
    agent = agents(config_text(blocks, polling=1), start=False)
    cmd = ["prlimit", "--nofile=1024:1024", "--"] + agent.command()
    err = open(agent.stderr_path, "w")
    agent.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=err, env=agent_env())
    err.close()
    # 10,000 collectors set up before the first tick: about 5 s here; five times that
    first = r.first(30.0)
    assert first is not None, agent.stderr()[-2000:]
    pid = agent.proc.pid
    assert len(os.listdir(f"/proc/{pid}/fd")) < 64
    assert TRACEBACK not in agent.stderr()
    assert agent.stop(10) == 0


def test_a_warning_is_given_once_not_on_every_reload(agents, receivers):
    r = receivers()
    text = config_text([("127.0.0.1", r.port)], polling=1, extra="pcap { promisc = on }")
    agent = agents(text)
    assert r.first(WAIT) is not None
    for revision in (2, 3, 4):
        agent.write_config(text)
        agent.signal(1)
        assert agent.wait_for_log(f"configuration revision {revision}", WAIT)
    assert agent.stderr().count("so it taps nothing") == 1


def test_check_refuses_an_ovs_remote_the_daemon_cannot_use(tmp_path):
    conf = tmp_path / "ovs.conf"
    conf.write_text("sflow {\n  collector { ip = 127.0.0.1 }\n  ovs { db = ssl:127.0.0.1:6640 }\n}\n")
    res = run_hsflowd("check", "-f", str(conf))
    assert res.returncode == 1 and res.stderr.startswith(f"{conf}:3: ovs {{ db = ssl:")
    assert TRACEBACK not in res.stderr


# ---------------------------------------------------------------- files cut short, bytes not UTF-8

GOOD = "sflow {\n  polling = 1\n  collector { ip = 127.0.0.1 udpport = 6343 }\n}\n"
# a push that stopped halfway: the second collector and the closing '}' never came
CUT = ("sflow {\n  polling = 1\n  collector { ip = 127.0.0.1 udpport = 6343 }\n"
       "  collector {\n    ip = 127.0.0.1\n")
BAD_FILES = [
    # (name, file bytes, the one line hsflowd check says after "PATH:")
    ("cut short", CUT.encode(), "4: 'collector {' is not closed: the file ends at line 5 "
     "before its '}', and before that of 'sflow {' on line 1 (was it cut short?)"),
    ("cut right after sflow {", b"sflow {\n  polling = 1\n", "1: 'sflow {' is not closed: "
     "the file ends at line 2 before its '}' (was it cut short?)"),
    ("not UTF-8 in a value", GOOD.encode()[:-2] + b"  agent = eth\xe9\xff\n}\n",
     "4: byte 0xe9 (column 14) is not UTF-8: save the file as UTF-8"),
    ("not UTF-8 in a comment", b"# caf\xe9 pushed by ansible\n" + GOOD.encode(),
     "1: byte 0xe9 (column 6) is not UTF-8: save the file as UTF-8"),
]


@pytest.mark.parametrize("data,said", [pytest.param(d, s, id=n) for n, d, s in BAD_FILES])
def test_check_says_a_bad_file_in_one_line(tmp_path, data, said):
    path = tmp_path / "bad.conf"
    path.write_bytes(data)
    res = run_hsflowd("check", "-f", str(path))
    assert (res.returncode, res.stdout, res.stderr) == (1, "", f"{path}:{said}\n")


@pytest.mark.parametrize("data,said", [pytest.param(d, s, id=n) for n, d, s in BAD_FILES[::2]])
def test_start_with_a_bad_file_is_one_line(agents, data, said):
    work = agents.workdir
    path = work / "bad.conf"
    path.write_bytes(data)
    line = start_fails(["-f", str(path), "-p", str(work / "x.pid"), "-o", str(work / "x.auto")])
    assert line == f"{path}:{said}"
    assert not (work / "x.pid").exists() and not (work / "x.auto").exists()


def test_check_accepts_a_byte_order_mark(tmp_path):
    path = tmp_path / "bom.conf"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    res = run_hsflowd("check", "-f", str(path))
    assert (res.returncode, res.stderr) == (0, "")
    assert "udpport = 6343" in res.stdout


@pytest.mark.parametrize("kind", ["cut short", "not UTF-8 in a value"])
def test_reload_with_a_bad_file_keeps_the_last_good_config(agents, receivers, kind):
    """Started with collector r1; the file is rewritten for r2, but arrives cut short (or
    with bytes that are not UTF-8): SIGHUP changes nothing, r1 still gets every datagram,
    r2 none, and the log says why in one line.  The next good file is taken."""
    r1, r2 = receivers(), receivers()
    agent = agents(config_text([("127.0.0.1", r1.port)], polling=1))
    assert r1.first(WAIT) is not None
    new = config_text([("127.0.0.1", r2.port)], polling=1)
    if kind == "cut short":
        data, said = new[:new.rindex("}")].encode(), (
            "1: 'sflow {' is not closed: the file ends at line 3 before its '}' "
            "(was it cut short?); keeping the running configuration (revision 1)")
    else:
        data, said = new.replace("}\n}", "}\n  agent = eth\xe9\n}").encode("latin-1"), (
            "4: byte 0xe9 (column 14) is not UTF-8: save the file as UTF-8; keeping the "
            "running configuration (revision 1)")
    temp = agent.config_path.with_suffix(".tmp")
    temp.write_bytes(data)
    os.replace(temp, agent.config_path)
    agent.signal(1)
    assert agent.wait_for_log(f"{agent.config_path}:{said}", WAIT), agent.stderr()
    r1.drain()
    assert r1.first(WAIT) is not None, "it stopped sending to the old collector"
    assert r2.first(3.0) is None, "it took the bad file"
    errors = [line for line in agent.stderr().splitlines() if f"{agent.config_path}:" in line]
    assert len(errors) == 1 and "ERROR" in errors[0], agent.stderr()
    agent.write_config(new)
    agent.signal(1)
    assert agent.wait_for_log("configuration revision 2", WAIT), agent.stderr()
    assert r2.first(WAIT) is not None
    assert TRACEBACK not in agent.stderr()
