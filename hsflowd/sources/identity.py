"""Who the host is: the sFlow machine type and the host UUID of host_descr (2000).

hsflowd picks the UUID in this order (``chooseUUID`` in hsflowd.c): the configured one
(``uuid=`` or ``-u``), the BIOS UUID from DMI, then one derived from the machine id (``-m`` or
/etc/machine-id).  The derivation is reproduced bit for bit so that a host keeps its identity
when it moves from hsflowd to this agent.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import sys
import uuid as uuidlib
from typing import Optional, Union

from ..sflow.counters import MachineType

__all__ = ["ZERO_UUID", "machine_type_of", "parse_uuid_text", "uuid_from_machine_id",
           "dmi_uuid", "choose_uuid"]

# the host source's logger: these messages are about its host_descr record
log = logging.getLogger("hsflowd.host")

ZERO_UUID = uuidlib.UUID(int=0)

_MACHINE_TYPES = (
    (re.compile(r"x86_64|amd64"), MachineType.X86_64),
    (re.compile(r"i[3-7]86|x86"), MachineType.X86),
    (re.compile(r"aarch64|arm"), MachineType.ARM),  # hsflowd sends arm (10) for aarch64 too
    (re.compile(r"ppc|powerpc"), MachineType.POWERPC),
    (re.compile(r"s390"), MachineType.S390),
    (re.compile(r"mips"), MachineType.MIPS),
    (re.compile(r"ia64"), MachineType.IA64),
    (re.compile(r"sparc"), MachineType.SPARC),
    (re.compile(r"alpha"), MachineType.ALPHA),
    (re.compile(r"m68k"), MachineType.M68K),
    (re.compile(r"parisc|hppa"), MachineType.HPPA),
)


def machine_type_of(machine: str) -> MachineType:
    """sFlow machine_type for a ``platform.machine()`` string."""
    m = machine.lower()
    for pattern, kind in _MACHINE_TYPES:
        if pattern.match(m):
            return kind
    return MachineType.OTHER


_UUID_SEPARATORS = re.compile(r"[.:-]")


def parse_uuid_text(text: str) -> uuidlib.UUID:
    """A UUID or machine id as hsflowd reads one: 32 hex digits, optionally split by
    ``-``, ``:`` or ``.`` (``-u``, ``uuid=``, ``-m``, /etc/machine-id, DMI product_uuid)."""
    digits = _UUID_SEPARATORS.sub("", text.strip())
    if len(digits) != 32 or not all(c in "0123456789abcdefABCDEF" for c in digits):
        raise ValueError(f"not a UUID (32 hex digits): {text.strip()[:60]!r}")
    return uuidlib.UUID(hex=digits)


# C's plain char is unsigned on these architectures and signed elsewhere (x86, mips...);
# hsflowd's hash reads the machine id through a plain char, so the result depends on it.
_UNSIGNED_CHAR = re.compile(r"aarch64|arm|ppc|powerpc|s390|riscv")


def _fnv1a32(data: bytes, signed_char: bool) -> int:
    h = 0x811C9DC5
    for b in data:
        if signed_char and b & 0x80:
            b |= 0xFFFFFF00  # a negative char is sign-extended before the xor
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def uuid_from_machine_id(machine_id: Union[bytes, str], signed_char: Optional[bool] = None,
                         byteorder: Optional[str] = None) -> uuidlib.UUID:
    """The UUID hsflowd derives from the machine id when it has neither ``-u`` nor a
    BIOS UUID (``chooseUUID`` in hsflowd.c).

    The 16 id bytes are hashed in two halves with 32-bit FNV-1a; the two hashes are stored
    twice as native 32-bit words (h1 h2 h1 h2), then the version (5) and RFC 4122 variant
    bits are set.  Native byte order and the signedness of C's char come from this host
    unless given (x86_64: little-endian, signed)."""
    raw = parse_uuid_text(machine_id).bytes if isinstance(machine_id, str) else bytes(machine_id)
    if len(raw) != 16:
        raise ValueError(f"a machine id is 16 bytes, not {len(raw)}")
    if signed_char is None:
        signed_char = not _UNSIGNED_CHAR.match(platform.machine().lower())
    order = byteorder or sys.byteorder
    h1 = _fnv1a32(raw[:8], signed_char).to_bytes(4, order)
    h2 = _fnv1a32(raw[8:], signed_char).to_bytes(4, order)
    out = bytearray(h1 + h2 + h1 + h2)
    out[6] = (out[6] & 0x0F) | 0x50
    out[8] = (out[8] & 0x3F) | 0x80
    return uuidlib.UUID(bytes=bytes(out))


def dmi_uuid(text: str) -> Optional[uuidlib.UUID]:
    """The BIOS system UUID from /sys/class/dmi/id/product_uuid, or None when it is a
    placeholder (all zeros or all ones: dmidecode prints those as "Not Present/Settable",
    so hsflowd falls back to the machine id for them too)."""
    try:
        u = parse_uuid_text(text)
    except ValueError:
        return None
    if u.int == 0 or u.int == (1 << 128) - 1:
        return None
    return u


def _read_text(path: str, what: str, level: int) -> Optional[str]:
    try:
        with open(path, "rb") as f:
            return f.read(4096).decode("utf-8", "surrogateescape")
    except OSError as e:
        log.log(level, "cannot read %s: %s", what, e)
        return None


def choose_uuid(explicit: Union[None, str, uuidlib.UUID], machine_id: Optional[str],
                sysfs: str = "/sys", etc: str = "/etc") -> uuidlib.UUID:
    """The host UUID in hsflowd's order: ``explicit`` (``uuid=`` / ``-u``; an all-zero one
    counts as not given), the DMI UUID under ``sysfs``, ``machine_id`` (``-m``), then
    ``etc``/machine-id; the zero UUID when there is none.  An invalid ``explicit`` or
    ``machine_id`` raises ValueError; an invalid file is logged and passed over."""
    if explicit:
        u = explicit if isinstance(explicit, uuidlib.UUID) else parse_uuid_text(explicit)
        if u.int:
            return u
    # most VMs and containers have none, and it is readable by root only
    text = _read_text(os.path.join(sysfs, "class", "dmi", "id", "product_uuid"),
                      "DMI product_uuid", logging.DEBUG)
    u = dmi_uuid(text) if text else None
    if u is not None:
        return u
    if machine_id:
        return uuid_from_machine_id(machine_id)
    path = os.path.join(etc, "machine-id")
    text = _read_text(path, "machine id", logging.INFO)
    if text:
        try:
            return uuid_from_machine_id(text)
        except ValueError as e:
            log.warning("%s: %s", path, e)
    # hsflowd would hash 16 zero bytes into a UUID every such host shares; all zeros
    # says "unknown" instead (sflowtool reads it so)
    log.warning("no uuid configured, no DMI UUID and no machine id: host_descr "
                "sends the zero UUID (set uuid= in hsflowd.conf)")
    return ZERO_UUID
