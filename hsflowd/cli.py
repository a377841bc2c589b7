"""The command line: hsflowd's own options, plus verbs for hosts without systemd.

    hsflowd [-d...] [-f FILE] [-p PIDFILE] [-u UUID] [-m MACHINEID] [-o AUTOFILE] [-v] [VERB]

With no verb it behaves as hsflowd: into the background, or in the foreground with -d
(which is how the systemd unit runs it).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import List, Optional

from . import __version__

DEFAULT_CONFIG = "/etc/hsflowd.conf"
DEFAULT_AUTO = "/etc/hsflowd.auto"

log = logging.getLogger("hsflowd")


def _common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """hsflowd's options; given before or after the verb (``hsflowd check -f FILE``)."""
    d = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
    parser.add_argument("-d", dest="debug", action="count", default=d(0),
                        help="stay in the foreground; repeat for debug messages (-dd)")
    parser.add_argument("-f", dest="config", metavar="FILE", default=d(DEFAULT_CONFIG),
                        help=f"configuration file (default {DEFAULT_CONFIG})")
    parser.add_argument("-p", dest="pidfile", metavar="PIDFILE", default=d(None),
                        help="pid file, locked while the agent runs (default /var/run/hsflowd.pid)")
    parser.add_argument("-u", dest="uuid", metavar="UUID", default=d(None),
                        help="host UUID to send in host_descr (overrides uuid= and the DMI UUID)")
    parser.add_argument("-m", dest="machine_id", metavar="MACHINEID", default=d(None),
                        help="machine id to derive the host UUID from (systemd passes %%m)")
    parser.add_argument("-o", dest="auto_file", metavar="AUTOFILE", default=d(DEFAULT_AUTO),
                        help=f"where to write the effective configuration (default {DEFAULT_AUTO})")
    parser.add_argument("-P", dest="keep_root", action="store_true", default=d(False),
                        help="keep running as root (by default the agent becomes nobody "
                        "with only the capabilities its modules need)")
    parser.add_argument("-l", dest="module_dir", default=d(None),
                        help=argparse.SUPPRESS)  # hsflowd: module directory; nothing to load here


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hsflowd", description="Host sFlow agent: sends host and interface counters and "
        "packet samples to sFlow collectors, configured by hsflowd.conf.",
        epilog="With no verb, hsflowd detaches into the background (-d: stays in the foreground).")
    _common(parser, suppress=False)
    parser.add_argument("-v", "--version", action="version",
                        version=f"hsflowd version {__version__} (Python {sys.version.split()[0]})")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    for name, text in (("start", "start the agent in the background"),
                       ("stop", "stop the running agent"),
                       ("restart", "stop, then start"),
                       ("reload", "make the running agent re-read its configuration (SIGHUP)"),
                       ("run", "run in the foreground (the same as -d)"),
                       ("check", "validate the configuration and print the effective settings")):
        sub = verbs.add_parser(name, help=text, description=text)
        _common(sub, suppress=True)
        if name == "reload":
            # the unit's ExecReload: systemd knows the agent's pid ($MAINPID) whatever -p is
            sub.add_argument("--pid", type=int, metavar="PID",
                             help="signal this process (the agent) instead of the one "
                             "that holds the pid file")
    st = verbs.add_parser("status", help="what the running agent does: revision, agent "
                          "address, collectors, sampled interfaces, modules (exit 3 if it "
                          "is not running)", description="Ask the running agent (over its "
                          "root-only socket) what it is doing.")
    _common(st, suppress=True)
    st.add_argument("--json", action="store_true", help="one JSON object")
    dec = verbs.add_parser("decode", help="print sFlow datagrams received on a UDP port or read "
                           "from a capture file", description="Print sFlow datagrams as text, "
                           "JSON, sflowtool's -l or -g lines, or sFlow-RT's metrics.")
    dec.add_argument("-p", "--port", type=int, default=6343,
                     help="UDP port to listen on (default 6343); with --pcap, only datagrams "
                     "sent to it")
    dec.add_argument("--bind", metavar="ADDR", help="address to listen on (default all)")
    dec.add_argument("-r", "--pcap", metavar="FILE",
                     help="read a pcap/pcapng file instead ('-' = stdin)")
    form = dec.add_mutually_exclusive_group()
    form.add_argument("-j", "--json", dest="mode", action="store_const", const="json",
                      help="one JSON object per datagram")
    form.add_argument("-l", dest="mode", action="store_const", const="line",
                      help="sflowtool -l: one CSV line per flow (FLOW) or counter (CNTR) sample")
    form.add_argument("-g", dest="mode", action="store_const", const="grep",
                      help="sflowtool -g: one line per field, after time, agent and sample ids")
    form.add_argument("--metrics", dest="mode", action="store_const", const="metrics",
                      help="every --interval, each agent's host and interface metrics under "
                      "sFlow-RT's names, as JSON lines")
    dec.add_argument("--summary", action="store_true",
                     help="with --metrics (implied): add min, q1, med, q3, max and sum of "
                     "each metric across agents")
    dec.add_argument("--interval", type=float, default=10.0, metavar="SECONDS",
                     help="how often --metrics reports (default 10)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    verb = args.verb
    # a daemon works from /: the paths it was given must not depend on where it started
    for name in ("config", "pidfile", "auto_file"):
        value = getattr(args, name, None)
        if value:
            setattr(args, name, os.path.abspath(value))
    if verb == "decode":
        from . import decode_cmd
        mode = args.mode or ("metrics" if args.summary else "text")
        if args.summary and mode != "metrics":
            print("hsflowd decode: --summary goes with --metrics", file=sys.stderr)
            return 2
        if args.interval <= 0:
            print("hsflowd decode: --interval must be more than 0", file=sys.stderr)
            return 2
        return decode_cmd.run(port=args.port, bind=args.bind, pcap=args.pcap, mode=mode,
                              interval=args.interval, summary=args.summary)
    from . import daemon
    pidfile = args.pidfile or daemon.DEFAULT_PIDFILE
    if verb == "check":
        return check(args.config)
    if verb == "stop":
        return daemon.stop(pidfile)
    if verb == "status":
        return status(pidfile, args.json)
    if verb == "reload":
        if args.pid is not None:
            return daemon.signal_pid(args.pid, signal.SIGHUP, "reloading its configuration")
        return daemon.signal_agent(pidfile, signal.SIGHUP, "reloading its configuration")
    if verb == "restart":
        code = daemon.stop(pidfile)
        if code != 0:
            return code
    foreground = verb == "run" or (verb is None and args.debug > 0)
    return run_agent(args, pidfile, foreground)


def check(path: str) -> int:
    from . import config as cfg
    try:
        config = cfg.load_config(path)
    except cfg.ConfigError as e:
        print(e, file=sys.stderr)
        return 1
    for warning in config.warnings + cfg.missing_devices(config, *cfg.host_interfaces()):
        print(f"warning: {warning}", file=sys.stderr)
    for block in config.unsupported:
        print(f"warning: {path}: {block} {{}} is not supported yet; it will be ignored", file=sys.stderr)
    print(cfg.describe(config))
    return 0


def status(pidfile: str, as_json: bool) -> int:
    """What the running agent says of itself; LSB codes: 0 running, 3 not running."""
    import json

    from . import daemon
    from .control import control_path, query

    pid = daemon.running_pid(pidfile)
    if pid is None:
        if as_json:
            print(json.dumps({"running": False}))
        else:
            print("hsflowd is not running")
        return 3
    try:
        state = query(control_path(pidfile))
    except (OSError, ValueError) as e:
        print(f"hsflowd is running (pid {pid}), but its status socket {control_path(pidfile)} "
              f"does not answer: {getattr(e, 'strerror', None) or e}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(state))
        return 0
    print(describe_status(state))
    return 0


def describe_status(s: dict) -> str:
    lines = [f"hsflowd is running (pid {s.get('pid')}), up {s.get('uptime', 0):.0f} s, "
             f"configuration revision {s.get('revision')} from {s.get('config')}",
             f"agent address {s.get('agent_address') or 'none'}"
             + (f" ({s['agent_device']})" if s.get("agent_device") else "")
             + f", sub-agent {s.get('sub_agent_id')}, {s.get('datagrams', 0)} datagrams"]
    for c in s.get("collectors", []):
        err = f", last error: {c['last_error']}" if c.get("last_error") else ""
        lines.append(f"  collector {c['address']}:{c['port']}: {c['datagrams']} datagrams, "
                     f"{c['errors']} errors{err}")
    for t in s.get("samplers", []):
        lines.append(f"  {t.get('module', 'sampler')} {t['ifname']}: 1-in-{t['sampling_rate']}, "
                     f"{t['samples']} samples, {t['drops']} drops")
    for m in s.get("modules", []):
        state = "running" if m.get("running") else "waiting to start again"
        err = f" (last error: {m['error']})" if m.get("error") else ""
        lines.append(f"  module {m['name']}: {state}{err}")
        for key, value in m.items():
            if isinstance(value, dict):     # the module's own figures
                lines.append("    " + key + ": " + ", ".join(
                    f"{k} {v}" for k, v in value.items() if not isinstance(v, dict)))
    return "\n".join(lines)


def run_agent(args, pidfile_path: str, foreground: bool) -> int:
    from . import config as cfg
    from . import daemon
    from .loop import Loop

    try:
        config = cfg.load_config(args.config)
    except cfg.ConfigError as e:
        print(e, file=sys.stderr)
        return 1

    def serve(report) -> int:
        loop = Loop()   # first: a SIGTERM or SIGHUP during start-up is seen, not fatal
        try:
            # the agent's own imports (pyroute2 and the rest, a third of a second) come
            # after the handlers, not before
            from .agent import Agent, Options, StartupError
            from .control import control_path
            options = Options(config_path=args.config, auto_path=args.auto_file, uuid=args.uuid,
                              machine_id=args.machine_id, keep_root=args.keep_root)
            daemon.setup_logging(args.debug, foreground)
            pidfile = daemon.PidFile(pidfile_path)
            try:
                pidfile.acquire()
            except daemon.AlreadyRunning as e:
                report(f"hsflowd: {e}")
                return 1
            except OSError as e:
                report(f"hsflowd: cannot write pid file {pidfile_path}: {e.strerror or e}")
                return 1
            try:
                try:
                    agent = Agent(config, options, loop, control_path(pidfile_path))
                except StartupError as e:
                    report(f"hsflowd: {e}")
                    return 1
                log.info("hsflowd %s started (pid %d, config %s)", __version__, os.getpid(),
                         args.config)
                return agent.run(ready=lambda: report(""))
            finally:
                pidfile.close()
        finally:
            loop.close()

    if foreground:
        def report(message: str) -> None:
            if message:
                print(message, file=sys.stderr)
        return serve(report)
    return daemon.detach(serve)


def run(argv: Optional[List[str]] = None) -> int:
    """The console script: main(), quiet when its output is piped into `head`."""
    try:
        return main(argv)
    except BrokenPipeError:
        # the reader went away: nothing more to say, and nothing for Python to flush at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(run())
