"""hsflowd.conf: tokens, then the blocks and keywords of keywords.py, then a Config.

The grammar is hsflowd's own (hsflowconfig.c):

* tokens are separated by space, tab, ``=`` or ``;``; ``#`` starts a comment;
* ``{`` and ``}`` are tokens even when written against a word (``pcap{dev=eth0}``);
* ``"..."`` quotes a value so it may hold any of those characters (regexes);
* keywords are case-insensitive; the file must start with ``sflow {``.

Where this parser differs from upstream, on purpose:

* ``#`` inside quotes is part of the value (upstream cuts the line at any ``#``);
* no line or token length limits (upstream silently truncates at 2048 and 255);
* numbers must be whole tokens ("12abc" is an error, not 12); "08" is an error, not 0;
* a value is never a bare ``{`` or ``}``: ``agent }`` is "missing value", not a device
  named "}";
* a second ``sflow { }`` is an error (upstream silently drops the first one's settings);
* a block the file never closes is an error naming the line that opened it: a file cut
  short (a config push that stopped halfway) would otherwise run without every collector
  after the cut (upstream logs "expect closing '}'" and runs on what it read);
* legacy top-level keys (nflogGroup, jsonPort, xen.dsk...) act as if written inside their
  block, so they turn that block on, as they did in hsflowd 1.x.

Mistakes a person must fix raise ConfigError; things hsflowd tolerates (a key set twice,
deprecated or ignored keys) become warnings in Config.warnings.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from typing import Dict, List, Optional, Tuple

from . import keywords as K
from .errors import ConfigError
from .model import (Collector, Config, ContainerdConfig, DockerConfig, DropmonConfig, JsonConfig,
                    K8sConfig, KvmConfig, NflogConfig, OvsConfig, PcapRule, PsampleConfig,
                    SystemdConfig, TcpConfig, UlogConfig)
from .sampling import print_speed
from .values import Bad, read_value

_SEPARATORS = " \t=;"
_WORD_END = _SEPARATORS + "#{}"
# Blocks with a class of their own; the others' settings go to Config.blocks as dicts.
_CLASSES = {"nflog": NflogConfig, "ulog": UlogConfig, "psample": PsampleConfig,
            "dropmon": DropmonConfig, "json": JsonConfig, "tcp": TcpConfig, "ovs": OvsConfig,
            "docker": DockerConfig, "containerd": ContainerdConfig, "k8s": K8sConfig,
            "kvm": KvmConfig, "systemd": SystemdConfig}
# A deprecated spelling warns wherever it appears, inside its block too ("nflogGroup").
_DEPRECATED = {s.lower(): k.prefer for k in K.BLOCKS["sflow"].keywords
               if k.prefer and not k.ignored for s in k.spellings}


@dataclasses.dataclass(frozen=True)
class Token:
    text: str
    line: int
    quoted: bool = False

    def is_(self, brace: str) -> bool:
        return not self.quoted and self.text == brace


def tokenize(text: str, path: str = "<string>") -> Tuple[List[Token], int]:
    """The tokens of ``text``, and its number of lines (for errors "at the end")."""
    tokens: List[Token] = []
    lines = re.split(r"\r\n|\r|\n", text)
    if len(lines) > 1 and lines[-1] == "":
        lines.pop()
    for number, line in enumerate(lines, 1):
        i, end = 0, len(line)
        while i < end:
            c = line[i]
            if c in _SEPARATORS:
                i += 1
            elif c == "#":
                break
            elif c in "{}":
                tokens.append(Token(c, number))
                i += 1
            elif c == '"':
                close = line.find('"', i + 1)
                if close < 0:
                    raise ConfigError(path, number, "unterminated quote: a '\"' opens a value "
                                      "that the end of the line does not close")
                tokens.append(Token(line[i + 1:close], number, quoted=True))
                i = close + 1
            else:
                j = i
                while j < end and line[j] not in _WORD_END:
                    j += 1
                tokens.append(Token(line[i:j], number))
                i = j
    return tokens, max(1, len(lines))


class _Instance:
    """One block being read: its values by keyword name, and where each was set."""

    def __init__(self, block: K.Block, name: str, line: int):
        self.block, self.name, self.line = block, name, line
        self.opened = False      # by "name {", not only by a legacy top-level key
        self.values = {k.name: (list(k.default) if isinstance(k.default, list) else k.default)
                       for k in block.keywords
                       if k.kind != K.BLOCK and not k.ignored and not k.target}
        self.seen: Dict[str, int] = {}
        self.children: Dict[str, List[_Instance]] = {}


class _Parser:
    def __init__(self, text: str, path: str):
        self.path = path
        self.tokens, self.last_line = tokenize(text, path)
        self.pos = 0
        self.warnings: List[str] = []
        self.first_seen: Dict[str, int] = {}          # block keyword -> first line
        self.singletons: Dict[str, _Instance] = {}
        self.multis: Dict[str, List[_Instance]] = {"collector": [], "pcap": [], "epcap": []}
        self.apps: Dict[str, Dict[str, int]] = {"sampling.": {}, "polling.": {}}
        self.app_seen: Dict[str, int] = {}
        self.app_order: List[str] = []
        self.top = _Instance(K.BLOCKS["sflow"], "sflow", 1)
        self.dns_sd: Optional[_Instance] = None     # dns-sd { } settings other than domain

    # -- helpers --------------------------------------------------------------------------

    def error(self, line: Optional[int], message: str) -> ConfigError:
        return ConfigError(self.path, line, message)

    def warn(self, line: int, message: str) -> None:
        self.warnings.append(f"{self.path}:{line}: {message}")

    def next(self) -> Optional[Token]:
        if self.pos >= len(self.tokens):
            return None
        self.pos += 1
        return self.tokens[self.pos - 1]

    def expect_open(self, word: Token) -> None:
        tok = self.next()
        if tok is None or not tok.is_("{"):
            line = word.line if tok is None else tok.line
            raise self.error(line, f"expected '{{' after {word.text!r}")

    # -- the file -------------------------------------------------------------------------

    def parse(self) -> Config:
        tok = self.next()
        if tok is None:
            raise self.error(self.last_line, "the file is empty: it must start with 'sflow {'")
        if tok.quoted or tok.text.lower() != "sflow":
            raise self.error(tok.line, f"the file must start with 'sflow {{', not {tok.text!r}")
        self.expect_open(tok)
        self.top.line, self.top.opened = tok.line, True
        self.body(self.top, [self.top])
        tok = self.next()
        if tok is not None:
            if tok.is_("}"):
                raise self.error(tok.line, "unexpected '}': more '}' than '{'")
            if tok.text.lower() == "sflow":
                raise self.error(tok.line, "only one 'sflow { }' block is allowed")
            raise self.error(tok.line, f"unexpected {tok.text!r} after the end of 'sflow {{ }}'")
        return self.build()

    def body(self, inst: _Instance, stack: List[_Instance]) -> None:
        """Read keywords up to the block's '}'."""
        while True:
            tok = self.next()
            if tok is None:
                raise self.unclosed(stack)
            if tok.is_("}"):
                return
            if tok.is_("{"):
                raise self.error(tok.line, "unexpected '{': a block name must come before it")
            if inst is self.top and tok.text.lower().startswith(K.APP_PREFIXES):
                self.app_setting(tok)
                continue
            keyword = inst.block.lookup(tok.text)
            if keyword is None:
                raise self.error(tok.line, self.unknown(tok, stack))
            if keyword.kind == K.BLOCK:
                self.expect_open(tok)
                child = self.open_block(keyword, tok, inst)
                self.body(child, stack + [child])
                continue
            self.assign(inst, keyword, tok, self.value(tok, keyword))

    def unclosed(self, stack: List[_Instance]) -> ConfigError:
        """The file ended inside a block: most likely it was cut short, so what it would
        have said after the cut (collectors too) is unknown.  The line is where the
        innermost open block was opened."""
        inner, outer = stack[-1], stack[-2::-1]
        also = "".join(f", and before that of '{i.name} {{' on line {i.line}" for i in outer)
        return self.error(inner.line, f"'{inner.name} {{' is not closed: the file ends at line "
                          f"{self.last_line} before its '}}'{also} (was it cut short?)")

    # -- keywords and values --------------------------------------------------------------

    def value(self, word: Token, keyword: K.Keyword):
        tok = self.next()
        if tok is None or tok.is_("{") or tok.is_("}"):
            raise self.error(word.line, f"{word.text!r} needs a value")
        try:
            return read_value(tok.text, keyword, word.text)
        except Bad as exc:
            raise self.error(tok.line, str(exc)) from None

    def assign(self, inst: _Instance, keyword: K.Keyword, tok: Token, value) -> None:
        spelled = tok.text
        prefer = _DEPRECATED.get(spelled.lower())
        if prefer:
            self.warn(tok.line, f"{spelled!r} is deprecated: write {prefer}")
        if keyword.name == "DNSSD" and value:
            self.first_seen.setdefault("dns-sd", tok.line)
        if keyword.target:
            block, _, name = keyword.target.partition(".")
            inst = self.singleton(block, tok.line)
            keyword = inst.block.keyword(name)
        if keyword.ignored:
            hint = f"; use {keyword.prefer} instead" if keyword.prefer else ""
            self.warn(tok.line, f"{spelled!r} is ignored: {keyword.ignored}{hint}")
            return
        if inst.name == "dns-sd" and keyword.name == "domain":   # the same as DNSSD_domain
            inst, keyword = self.top, self.top.block.keyword("DNSSD_domain")
        if keyword.repeat:
            inst.values[keyword.name] = inst.values[keyword.name] + [
                dataclasses.replace(value, line=tok.line)]
            return
        if keyword.name in inst.seen:
            self.warn(tok.line, f"{spelled!r} is set again (first at line "
                      f"{inst.seen[keyword.name]}): the last value wins")
        inst.seen[keyword.name] = tok.line
        inst.values[keyword.name] = value

    def app_setting(self, tok: Token) -> None:
        prefix = "sampling." if tok.text.lower().startswith("sampling.") else "polling."
        app = tok.text[len(prefix):]
        if not app:
            raise self.error(tok.line, f"{tok.text!r} needs a name after the dot, like "
                             f"{prefix}1G or {prefix}http")
        keyword = K.APP_SAMPLING if prefix == "sampling." else K.APP_POLLING
        value = self.value(tok, keyword)
        key = prefix + app
        if key in self.app_seen:
            self.warn(tok.line, f"{tok.text!r} is set again (first at line "
                      f"{self.app_seen[key]}): the last value wins")
        self.app_seen[key] = tok.line
        self.apps[prefix][app] = value
        if app not in self.app_order:
            self.app_order.append(app)
        speed = re.fullmatch(r"([0-9]{1,20})([kKmMgGtT]?)", app)
        if prefix == "sampling." and speed:
            bps = int(speed.group(1)) * {"": 1, "K": 10 ** 3, "M": 10 ** 6, "G": 10 ** 9,
                                         "T": 10 ** 12}[speed.group(2).upper()]
            if print_speed(bps) != app:
                self.warn(tok.line, f"{tok.text!r} never matches: a link of that speed is "
                          f"looked up as 'sampling.{print_speed(bps)}' (case matters)")

    def unknown(self, tok: Token, stack: List[_Instance]) -> str:
        word, inst = tok.text, stack[-1]
        here = f"{inst.name} {{ }}"
        for outer in stack[:-1]:
            if outer.block.lookup(word) is not None or (
                    outer is self.top and word.lower().startswith(K.APP_PREFIXES)):
                return (f"{word!r} is not a setting of {here} (opened at line {inst.line}); "
                        "is a '}' missing before it?")
        elsewhere = [b for b in K.where_allowed(word) if b not in ("sflow", "port")]
        if elsewhere:
            places = ", ".join(f"{b} {{ }}" for b in elsewhere[:3])
            return f"{word!r} is not a setting of {here}; it belongs in {places}"
        message = f"unknown keyword {word!r} in {here}"
        head, dot, rest = word.partition(".")
        if inst is self.top and dot:
            near = difflib.get_close_matches(head.lower(), ["sampling", "polling"], n=1)
            if near:
                return f"{message}; did you mean '{near[0]}.{rest}'?"
        spellings = {s.lower(): s for s in inst.block.spellings()}
        guess = difflib.get_close_matches(word.lower(), list(spellings), n=1)
        if guess:
            return f"{message}; did you mean {spellings[guess[0]]!r}?"
        return message

    # -- blocks ---------------------------------------------------------------------------

    def singleton(self, name: str, line: int, block: Optional[K.Block] = None) -> _Instance:
        self.first_seen.setdefault(name, line)
        if name not in self.singletons:
            self.singletons[name] = _Instance(block or K.BLOCKS[name], name, line)
        return self.singletons[name]

    def open_block(self, keyword: K.Keyword, tok: Token, parent: _Instance) -> _Instance:
        block = K.BLOCKS[keyword.block]
        if parent is self.top:
            self.first_seen.setdefault(keyword.name, tok.line)
        if block.multi:
            inst = _Instance(block, keyword.name, tok.line)
            siblings = self.multis if parent is self.top else parent.children
            siblings.setdefault(keyword.name, []).append(inst)
        elif keyword.name == "dns-sd":      # the same switch as DNSSD=on
            if self.dns_sd is None:
                self.dns_sd = _Instance(block, keyword.name, tok.line)
            inst = self.dns_sd
            self.top.values["DNSSD"] = True
            self.top.seen.pop("DNSSD", None)
        else:
            inst = self.singleton(keyword.name, tok.line, block)
            if inst.opened:
                self.warn(tok.line, f"'{keyword.name} {{ }}' appears again (first at line "
                          f"{inst.line}): its settings are merged, the last value wins")
        inst.opened = True
        return inst

    # -- the result -----------------------------------------------------------------------

    def make(self, cls, inst: _Instance):
        """The block's dataclass: each keyword's value goes to the field named ``attr``."""
        fields = {k.attr: inst.values[k.name] for k in inst.block.keywords
                  if k.name in inst.values}
        for keyword in inst.block.keywords:
            if keyword.required and fields.get(keyword.attr) is None:
                raise self.error(inst.line, f"'{inst.name} {{ }}' needs {keyword.name}=")
        return cls(line=inst.line, **fields)

    def make_rule(self, inst: _Instance) -> PcapRule:
        """A pcap or epcap rule: each keyword to its field, as ``make``, but speed's
        min[-max] to two fields."""
        values = dict(inst.values)
        speed = values.pop("speed") or (None, None)
        if values["dev"] is None and values["dev.pattern"] is None and speed[0] is None \
                and not values["dynamic"]:
            self.warn(inst.line, f"'{inst.name} {{ }}' has no dev, dev.pattern or speed, so "
                      "it taps nothing")
        elif values["dev"] is not None and values["dev.pattern"] is not None:
            self.warn(inst.line, f"'{inst.name} {{ }}' has both dev and dev.pattern: dev wins")
        return PcapRule(speed_min=speed[0], speed_max=speed[1], line=inst.line,
                        **{inst.block.keyword(name).attr: v for name, v in values.items()})

    def generic(self, inst: _Instance) -> dict:
        settings = dict(inst.values)
        for name, children in inst.children.items():
            settings[name] = [self.generic(child) for child in children]
        return settings

    def build(self) -> Config:
        top = {k.attr: self.top.values[k.name] for k in self.top.block.keywords
               if k.name in self.top.values}
        typed, blocks = {}, {}
        for name, inst in self.singletons.items():
            if name in _CLASSES:
                typed[name] = self.make(_CLASSES[name], inst)
            else:
                blocks[name] = self.generic(inst)
        enabled = set(self.singletons) | {n for n, lst in self.multis.items() if lst}
        if top["dns_sd"]:
            enabled.add("dns-sd")
        unsupported = [name for name in self.first_seen if name in enabled
                       and not K.BLOCKS[K.BLOCKS["sflow"].keyword(name).block].supported]
        if self.dns_sd is not None:
            top["dns_sd_start_delay"] = self.dns_sd.values["startDelay"]
        config = Config(
            path=self.path, **top,
            sampling_settings=self.apps["sampling."], polling_settings=self.apps["polling."],
            app_order=tuple(self.app_order),
            collectors=[self.make(Collector, i) for i in self.multis["collector"]],
            pcap=[self.make_rule(i) for i in self.multis["pcap"]],
            epcap=[self.make_rule(i) for i in self.multis["epcap"]],
            blocks=blocks, unsupported=unsupported, warnings=self.warnings,
            lines=dict(self.top.seen), **typed)
        self.check(config, enabled)
        return config

    def check(self, config: Config, enabled: set) -> None:
        self.notes(config)
        if config.dns_sd:
            for other in ("eapi", "sonic"):
                if other in enabled:
                    line = max(self.first_seen.get("dns-sd", self.top.seen.get("DNSSD", 0)),
                               self.first_seen[other])
                    raise self.error(line, f"dns-sd cannot be combined with {other} {{ }}")
        if config.ovs is not None and config.ovs.db is not None \
                and config.ovs.db.split(":")[0] not in ("unix", "tcp"):
            ovs = self.singletons["ovs"]
            raise self.error(ovs.seen.get("db", ovs.line),
                             f"ovs {{ db = {config.ovs.db} }}: only unix:PATH and tcp:IP:PORT "
                             "remotes are supported (ssl: needs certificates this agent does "
                             "not configure)")
        if not config.collectors and not (config.dns_sd or enabled & {"eapi", "sonic"}):
            raise self.error(self.last_line, "no collector is defined: add "
                             "collector { ip=... } (or dns-sd { } to learn them from DNS)")

    def notes(self, config: Config) -> None:
        """Warnings about settings that parse but do nothing (config.warnings is the list
        the agent logs and ``hsflowd check`` prints, so adding to it here is enough)."""
        if config.dns_sd:
            for collector in config.collectors:
                self.warn(collector.line, "this collector is not used: with dns-sd on, the "
                          "collectors come from DNS SRV records (as in hsflowd)")
            unused = [name for name in ("sampling", "polling", "headerBytes")
                      if name in self.top.seen] + [f"{p}{app}" for p in K.APP_PREFIXES
                                                    for app in self.apps[p]]
            if unused:
                line = min([self.top.seen[n] for n in ("sampling", "polling", "headerBytes")
                            if n in self.top.seen] + [self.app_seen[n] for n in unused
                                                      if n in self.app_seen])
                self.warn(line, f"{', '.join(unused)} not used: with dns-sd on, DNS TXT records "
                          "set sampling and polling (else 400 and 30 s, as in hsflowd)")
        if config.json is not None and not config.json.udpport:
            self.warn(config.json.line, "json { } has no udpport=, so it listens nowhere")


def parse_config(text: str, path: str = "<string>") -> Config:
    """Parse hsflowd.conf text.  Raises ConfigError; tolerated problems are in .warnings."""
    return _Parser(text, path).parse()
