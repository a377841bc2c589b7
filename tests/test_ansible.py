"""The Ansible role (packaging/ansible/hsflowd), run with ansible-playbook against localhost.

Everything goes to a temporary root: the agent is pip-installed from a wheel of this tree
into a virtualenv there, and the configuration, pid file and .auto file are written there.
Nothing outside it changes (the role is told to leave /usr/sbin alone).

Needs ansible-core (ansible-playbook) and, for one test, ansible-lint, in the Python that
runs the tests or on PATH; without them the tests are skipped and say so.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from package_tools import copy_tree

REPO = Path(__file__).resolve().parent.parent
ROLES = REPO / "packaging" / "ansible"
ROLE = ROLES / "hsflowd"
sys.path.insert(0, str(REPO))


def tool(name: str):
    """`name` beside the Python running the tests (a virtualenv), else on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


ANSIBLE_PLAYBOOK = tool("ansible-playbook")
ANSIBLE_LINT = tool("ansible-lint")
# the managed node's Python: Debian's where there is one (interpreter discovery finds pyenv
# shims that do not work here, so it is always given)
NODE_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

if ANSIBLE_PLAYBOOK is None:
    print("\ntest_ansible: skipped: ansible-playbook not found (pip install ansible-core)")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(ANSIBLE_PLAYBOOK is None,
                                 reason="ansible-playbook not found (pip install ansible-core)")]

PLAYBOOK = """\
- name: Install and configure hsflowd
  hosts: all
  gather_facts: false
  roles:
    - role: hsflowd
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A temporary root, a wheel of this tree, the playbook, and ansible's own files."""
    base = tmp_path_factory.mktemp("ansible")
    wheels = base / "wheels"
    # from a copy: setuptools leaves build/ in the tree it builds
    tree = copy_tree(base / "src")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                            str(wheels), str(tree)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    (base / "root" / "etc").mkdir(parents=True)
    (base / "site.yml").write_text(PLAYBOOK)
    environ = {**os.environ, "LC_ALL": "C.UTF-8", "ANSIBLE_ROLES_PATH": str(ROLES),
               "ANSIBLE_HOME": str(base / "ansible-home"), "ANSIBLE_LOCAL_TEMP": str(base / "tmp"),
               "ANSIBLE_REMOTE_TEMP": str(base / "tmp"), "ANSIBLE_NOCOLOR": "1",
               "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_RETRY_FILES_ENABLED": "0",
               "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    return {"base": base, "root": base / "root", "wheel": str(next(wheels.glob("hsflowd-*.whl"))),
            "environ": environ}


def role_vars(env, **more):
    root = env["root"]
    settings = {
        "hsflowd_install_method": "pip",
        "hsflowd_pip_spec": env["wheel"],
        "hsflowd_venv": str(root / "venv"),
        "hsflowd_python": NODE_PYTHON,
        "hsflowd_pip_system_packages": [],
        "hsflowd_bin_link": "",
        "hsflowd_config_path": str(root / "etc" / "hsflowd.conf"),
        "hsflowd_service_manager": "none",
        "hsflowd_pidfile": str(root / "hsflowd.pid"),
        "hsflowd_auto_path": str(root / "hsflowd.auto"),
        "hsflowd_collectors": [{"ip": "127.0.0.1", "port": 16343},
                               {"ip": "192.0.2.10", "dev": "lo", "namespace": "blue"}],
        "hsflowd_sampling": 1000,
        "hsflowd_polling": 20,
        "hsflowd_sampling_bps_ratio": 0,
        "hsflowd_sampling_speeds": {"1G": 500, "10G": 5000},
        "hsflowd_agent": "lo",
        "hsflowd_agent_cidr": ["10.0.0.0/8", "!172.17.0.0/16"],
        "hsflowd_header_bytes": 256,
        "hsflowd_datagram_bytes": 1400,
        "hsflowd_pcap": [{"dev": "lo", "sampling": 100, "promisc": True},
                         {"pattern": "^veth.*", "sampling": 200}, {"speed": "1G-1T"}],
        "hsflowd_nflog": {"group": 5, "probability": 0.0025},
        "hsflowd_ovs": True,
        "hsflowd_dns_sd": True,
        "hsflowd_dns_sd_domain": ".example.com",
    }
    settings.update(more)
    return settings


def play(env, settings):
    """ansible-playbook; returns (returncode, output, recap counts)."""
    path = env["base"] / "vars.json"
    path.write_text(json.dumps(settings))
    result = subprocess.run(
        [ANSIBLE_PLAYBOOK, "-i", "localhost,", "-c", "local",
         "-e", f"ansible_python_interpreter={NODE_PYTHON}", "-e", f"@{path}",
         str(env["base"] / "site.yml")],
        capture_output=True, text=True, env=env["environ"], stdin=subprocess.DEVNULL, timeout=300)
    output = result.stdout + result.stderr
    recap = re.search(r"^localhost\s*:\s*(.*)$", output, re.M)
    counts = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", recap.group(1))} if recap else {}
    return result.returncode, output, counts


def hsflowd_check(env, path):
    return subprocess.run([str(env["root"] / "venv" / "bin" / "hsflowd"), "check", "-f", str(path)],
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def converged(env):
    """The role run twice with the same variables: (first, second) recap counts."""
    code, output, first = play(env, role_vars(env))
    assert code == 0, output[-4000:]
    code, output, second = play(env, role_vars(env))
    assert code == 0, output[-4000:]
    return first, second, output


def test_first_run_changes_second_changes_nothing(converged):
    first, second, output = converged
    print(f"\nfirst run: {first}\nsecond run: {second}")
    assert first["changed"] >= 2           # the virtualenv, the configuration
    assert second["changed"] == 0, output[-4000:]
    assert second["failed"] == 0


def test_rendered_config_passes_hsflowd_check(env, converged):
    conf = env["root"] / "etc" / "hsflowd.conf"
    text = conf.read_text()
    for line in ("collector { ip = 127.0.0.1 udpport = 16343 }",
                 "collector { ip = 192.0.2.10 udpport = 6343 dev = lo namespace = blue }",
                 "sampling = 1000", "polling = 20", "sampling.bps_ratio = 0", "sampling.1G = 500",
                 "sampling.10G = 5000", "agent = lo", "agent.cidr = 10.0.0.0/8",
                 "agent.cidr = !172.17.0.0/16", "headerBytes = 256", "datagramBytes = 1400",
                 "pcap { dev = lo sampling = 100 promisc = on }",
                 'pcap { dev.pattern = "^veth.*" sampling = 200 }', "pcap { speed = 1G-1T }",
                 "nflog { group = 5 probability = 0.0025 }", "ovs { }",
                 "dns-sd { domain = .example.com }"):
        assert f"\n  {line}\n" in text, line
    check = hsflowd_check(env, conf)
    assert check.returncode == 0, check.stderr
    assert "udpport = 16343" in check.stdout and "namespace = blue" in check.stdout
    assert "sampling.bps_ratio = 0" in check.stdout


@pytest.mark.parametrize("bad, message", [
    ({"hsflowd_sampling": -5}, "hsflowd: hsflowd_sampling is a 1-in-N rate, 0 or more, not -5"),
    ({"hsflowd_collectors": [{"port": 6343}]},
     "missing required arguments: ip found in hsflowd_collectors"),
    ({"hsflowd_collectors": [{"ip": "127.0.0.1", "port": 70000}]}, "a collector port is 1-65535"),
    ({"hsflowd_pcap": [{"dev": "lo", "speed": "1G"}]},
     "parameters are mutually exclusive: dev|pattern|speed"),
    ({"hsflowd_install_method": "rpm"}, "hsflowd_install_method must be one of"),
    ({"hsflowd_pip_spec": ""}, "hsflowd_install_method=pip needs hsflowd_pip_spec"),
], ids=["negative-sampling", "collector-without-ip", "port", "pcap-dev-and-speed", "method",
        "pip-without-spec"])
def test_bad_variables_fail_with_a_clear_message(env, converged, bad, message):
    conf = env["root"] / "etc" / "hsflowd.conf"
    before = conf.read_text()
    code, output, counts = play(env, role_vars(env, **bad))
    assert code != 0 and counts.get("changed") == 0, output[-3000:]
    assert message in output, output[-3000:]
    assert conf.read_text() == before


def test_config_that_hsflowd_check_refuses_is_not_installed(env, converged):
    conf = env["root"] / "etc" / "hsflowd.conf"
    before = conf.read_text()
    code, output, _ = play(env, role_vars(env, hsflowd_extra_config=["samplingg = 5"]))
    assert code != 0
    assert "failed to validate" in output, output[-3000:]
    assert "unknown keyword 'samplingg'" in output, output[-3000:]
    assert conf.read_text() == before


def test_handler_reloads_the_agent_where_there_is_no_service_manager(env, converged):
    """hsflowd_service_manager=hsflowd (what `auto` picks without systemd): the role starts
    the agent with `hsflowd start`, and a changed configuration makes the handler run
    `hsflowd reload`, after which the agent has written revision 2 of its .auto file."""
    root = env["root"]
    hsflowd = str(root / "venv" / "bin" / "hsflowd")
    pidfile = str(root / "hsflowd.pid")
    # an agent really runs: loopback only, and nothing that touches the host (no pcap,
    # nflog, OVS or namespace= collector)
    manage = {"hsflowd_service_manager": "hsflowd", "hsflowd_agent": None,
              "hsflowd_agent_ip": "127.0.0.1", "hsflowd_agent_cidr": [],
              "hsflowd_collectors": [{"ip": "127.0.0.1", "port": 16343}], "hsflowd_pcap": [],
              "hsflowd_nflog": None, "hsflowd_ovs": False, "hsflowd_dns_sd": False}
    try:
        code, output, counts = play(env, role_vars(env, **manage))
        assert code == 0, output[-4000:]
        assert "TASK [hsflowd : Start hsflowd]" in output and counts["changed"] >= 1
        status = subprocess.run([hsflowd, "status", "-p", pidfile], capture_output=True)
        assert status.returncode == 0
        auto = root / "hsflowd.auto"
        assert "rev_start=1\n" in auto.read_text()

        code, output, counts = play(env, role_vars(env, hsflowd_polling=15, **manage))
        assert code == 0, output[-4000:]
        assert "RUNNING HANDLER [hsflowd : Reload hsflowd with its own command]" in output
        assert counts["changed"] == 2                # the file and the reload
        for _ in range(100):
            if "rev_start=2\n" in auto.read_text():
                break
            subprocess.run(["sleep", "0.05"])
        text = auto.read_text()
        assert "rev_start=2\n" in text and "polling=15\n" in text

        code, output, counts = play(env, role_vars(env, hsflowd_polling=15, **manage))
        assert code == 0 and counts["changed"] == 0, output[-4000:]
    finally:
        subprocess.run([hsflowd, "stop", "-p", pidfile], capture_output=True)


@pytest.mark.skipif(ANSIBLE_LINT is None,
                    reason="ansible-lint not found (pip install ansible-lint)")
def test_ansible_lint_passes(env):
    # on a copy: ansible-lint makes a .ansible/ cache in its project (the git checkout)
    lint = env["base"] / "lint"
    shutil.copytree(ROLE, lint / "hsflowd")
    result = subprocess.run([ANSIBLE_LINT, "--offline", "--nocolor", "hsflowd"], cwd=lint,
                            capture_output=True, text=True, env=env["environ"],
                            stdin=subprocess.DEVNULL, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
