"""Reading one value token by its keyword's kind (see the kinds in keywords.py).

Each reader is a pure function of the text; it raises ``Bad`` with a message that names
what was expected, and the parser adds ``FILE:LINE:``.  The readers are stricter than
hsflowd's strtol/strtod: "12abc" is refused here, where C would quietly read 12.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import uuid as uuidlib
import warnings
from typing import Callable, Dict, Optional, Tuple

from . import keywords as K
from .model import AgentCidr


class Bad(ValueError):
    """A value that does not fit its keyword; the message says what was wanted."""


_MULTIPLIERS = {"K": 10 ** 3, "M": 10 ** 6, "G": 10 ** 9, "T": 10 ** 12, "P": 10 ** 15}
_DECIMAL = re.compile(r"[1-9][0-9]*|0")
_HEX = re.compile(r"0[xX][0-9a-fA-F]+")
_OCTAL = re.compile(r"0[0-7]+")
_FLOAT = re.compile(r"[0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?")


def parse_number(text: str, suffixes: str = "KMG", what: str = "the value") -> int:
    """An unsigned integer as hsflowd reads one: strtol base 0, then a K/M/G multiplier.

    As in C, "0x10" is hex and a leading 0 means octal ("010" is 8); "08" is refused
    rather than read as 0 the way strtol would.
    """
    body, mult = text, 1
    if body and body[-1].upper() in suffixes:
        body, mult = body[:-1], _MULTIPLIERS[body[-1].upper()]
    if len(body) <= 40:            # longer is no config value, and int() would balk
        if _DECIMAL.fullmatch(body):
            return int(body, 10) * mult
        if _HEX.fullmatch(body):
            return int(body, 16) * mult
        if _OCTAL.fullmatch(body):
            return int(body, 8) * mult
    note = " (a leading 0 means octal, as in C)" if re.fullmatch(r"0[0-9]+", body) else ""
    raise Bad(f"{what} needs an integer, got {text!r}{note}")


def _in_range(value, keyword: K.Keyword, spelled: str):
    if keyword.range is not None:
        lo, hi = keyword.range
        if not lo <= value <= hi:
            raise Bad(f"{spelled!r} must be {_num(lo)}..{_num(hi)}, got {text_of(value)}")
    return value


def _num(x) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def text_of(value) -> str:
    return _num(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else str(value)


def read_int(text: str, keyword: K.Keyword, spelled: str) -> int:
    return _in_range(parse_number(text, what=repr(spelled)), keyword, spelled)


def read_float(text: str, keyword: K.Keyword, spelled: str) -> float:
    if not _FLOAT.fullmatch(text):
        raise Bad(f"{spelled!r} needs a number like 0.01, got {text!r}")
    return _in_range(float(text), keyword, spelled)


def read_onoff(text: str, keyword: K.Keyword, spelled: str) -> bool:
    if text.lower() not in ("on", "off"):
        raise Bad(f"{spelled!r} needs on or off, got {text!r}")
    return text.lower() == "on"


def read_direction(text: str, keyword: K.Keyword, spelled: str) -> str:
    if text.lower() not in ("in", "out", "both"):
        raise Bad(f"{spelled!r} needs in, out or both, got {text!r}")
    return text.lower()


def read_string(text: str, keyword: K.Keyword, spelled: str) -> str:
    if not text:
        raise Bad(f"{spelled!r} needs a value, got an empty string")
    return text


_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


def canonical_ipv4(text: str) -> Optional[str]:
    """``text`` in IPv4's canonical form if it is an IPv4 address, else None: what ten
    thousand collector blocks hold, in a tenth of ipaddress's time."""
    try:
        return socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, text))
    except (OSError, ValueError):
        return None


def read_host(text: str, keyword: K.Keyword, spelled: str) -> str:
    """An IP address (returned in its canonical form) or a host name (returned as written)."""
    ipv4 = canonical_ipv4(text)
    if ipv4 is not None:
        return ipv4
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    name = text[:-1] if text.endswith(".") else text
    if (not name or len(name) > 253 or re.fullmatch(r"[0-9.]+", name)
            or not all(_LABEL.fullmatch(p) for p in name.split("."))):
        raise Bad(f"{spelled!r} needs an IP address or host name, got {text!r}")
    return text


def read_cidr(text: str, keyword: K.Keyword, spelled: str) -> AgentCidr:
    """[!]address/prefix.  The prefix may be a mask ("10.0.0.0/255.0.0.0"); host bits are
    cleared, as hsflowd masks the address it reads."""
    exclude = text.startswith("!")
    body = text[1:] if exclude else text
    wanted = f"{spelled!r} needs address/prefix like 10.0.0.0/8 or !fe80::/10, got {text!r}"
    if body.count("/") != 1:
        raise Bad(wanted)
    address, prefix = body.split("/")
    try:
        ip = ipaddress.ip_address(address)
        if "." in prefix or ":" in prefix:
            mask = ipaddress.ip_address(prefix)
            if mask.version != ip.version:
                raise ValueError
            bits, width = bin(int(mask)).count("1"), mask.max_prefixlen
            if int(mask) != (1 << width) - (1 << (width - bits)):     # ones, then zeros
                raise ValueError
        elif _DECIMAL.fullmatch(prefix):
            bits = int(prefix)
        else:
            raise ValueError
        network = ipaddress.ip_network(f"{ip}/{bits}", strict=False)
    except ValueError:
        raise Bad(wanted) from None
    return AgentCidr(network, exclude)


def read_uuid(text: str, keyword: K.Keyword, spelled: str) -> str:
    try:
        return str(uuidlib.UUID(text))
    except ValueError:
        raise Bad(f"{spelled!r} needs a UUID like 8d9e8f14-1b6c-4a3e-9d61-3f0e5c2a7b10, "
                  f"got {text!r}") from None


# POSIX bracket classes that Python's re does not know
_POSIX_CLASSES = {"alnum": "a-zA-Z0-9", "alpha": "a-zA-Z", "digit": "0-9", "lower": "a-z",
                  "upper": "A-Z", "space": r" \t\r\n\v\f", "xdigit": "0-9A-Fa-f",
                  "blank": r" \t", "punct": r"!-/:-@\[-`{-~"}


def read_regex(text: str, keyword: K.Keyword, spelled: str) -> re.Pattern:
    """hsflowd compiles POSIX extended regexes; Python's re reads the common ones the same
    way once [[:digit:]]-style classes are spelled out.  Match with ``.search``."""
    source = re.sub(r"\[:(\w+):\]", lambda m: _POSIX_CLASSES.get(m.group(1), m.group(0)), text)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return re.compile(source)
    except (re.error, RecursionError, OverflowError) as exc:
        raise Bad(f"{spelled!r} needs a regular expression, got {text!r} ({exc})") from None


def read_speeds(text: str, keyword: K.Keyword, spelled: str) -> Tuple[int, int]:
    """A pcap speed: "1G" means exactly 1G, "1G-1T" a range, "1G-" 1G and faster."""
    low, dash, high = text.partition("-")
    try:
        lo = parse_number(low, "KMGTP")
        hi = (K.SPEED_MAX if not high else parse_number(high, "KMGTP")) if dash else lo
    except Bad:
        raise Bad(f"{spelled!r} needs a speed like 1G, 100M-10G or 1G-, got {text!r}") from None
    if lo > K.SPEED_MAX or hi > K.SPEED_MAX:
        raise Bad(f"{spelled!r} must be at most {K.SPEED_MAX} bits/s, got {text!r}")
    if lo > hi:
        raise Bad(f"{spelled!r} range {text!r} has its minimum above its maximum")
    return lo, hi


READERS: Dict[str, Callable] = {
    K.INT: read_int, K.FLOAT: read_float, K.ONOFF: read_onoff, K.STRING: read_string,
    K.DEVICE: read_string, K.PATH: read_string, K.HOST: read_host, K.CIDR: read_cidr,
    K.UUID: read_uuid, K.REGEX: read_regex, K.SPEEDS: read_speeds,
    K.DIRECTION: read_direction,
}


def read_value(text: str, keyword: K.Keyword, spelled: str):
    return READERS[keyword.kind](text, keyword, spelled)
