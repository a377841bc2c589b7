"""Data source numbers for containers and VMs: 3:N, N = 100000 + hash(UUID) mod 50000; and
the UUID hsflowd makes for a guest that has none of its own (``name_uuid``).

hsflowd's assignVM_dsIndex: the hash is 32-bit FNV-1a over the UUID's 16 bytes, and a
number already taken moves on to the next one (linear probing), wrapping from 149999 to
100000; 150000 and up belong to applications.  A guest keeps its number for as long as it
is known, so the same UUID gets the same N across agent restarts unless two guests collide.

hsflowd hashes through ``char *``: where the C compiler's ``char`` is signed (x86, x86-64),
a byte of 0x80 or more is sign-extended before the XOR, which changes the hash; where it is
unsigned (ARM, AArch64, POWER, s390x) it is not.  ``hash_uuid`` does what hsflowd built for
this machine does, so a collector sees the same N from either agent.

The table is the agent's, not a module's: docker {} and kvm {} draw from the same range,
as they do in hsflowd (one vmsByDsIndex).
"""

from __future__ import annotations

import hashlib
import platform
import uuid
from typing import Dict, Optional, Tuple

FIRST = 100000          # HSP_DEFAULT_LOGICAL_DSINDEX_START
LAST = 149999           # HSP_DEFAULT_APP_DSINDEX_START - 1
RANGE = LAST - FIRST + 1
DS_CLASS = 3            # SFL_DSCLASS_LOGICAL_ENTITY

FNV_OFFSET_32 = 2166136261
FNV_PRIME_32 = 16777619

# where gcc's plain char is unsigned (its target defaults)
_UNSIGNED_CHAR = ("aarch64", "arm", "ppc", "powerpc", "s390", "riscv")


def name_uuid(host_uuid: Optional[uuid.UUID], name: str, agent_ip: bytes = bytes(4)) -> bytes:
    """hsflowd's uuidgen_type5, for a service (mod_systemd), a pod (mod_k8s) or a container
    whose id is not a UUID (mod_containerd): RFC 4122's name-based UUID (SHA-1, version 5)
    under the host's UUID as the namespace (zeros when there is none), of the name followed
    by the agent's address (4 or 16 bytes; zeros while there is none), so that two hosts
    never give one name the same UUID."""
    digest = hashlib.sha1((host_uuid.bytes if host_uuid is not None else bytes(16))
                          + name.encode("utf-8", "surrogateescape") + agent_ip).digest()
    return uuid.UUID(bytes=digest[:16], version=5).bytes


def char_is_signed(machine: Optional[str] = None) -> bool:
    """Whether C's ``char`` is signed on this machine (gcc's default for the target)."""
    machine = (machine or platform.machine()).lower()
    return not machine.startswith(_UNSIGNED_CHAR)


def hash_uuid(uuid16: bytes, signed_char: Optional[bool] = None) -> int:
    """hsflowd's hashUUID: FNV-1a 32 over the 16 bytes, as its ``char`` reads them."""
    if signed_char is None:
        signed_char = char_is_signed()
    h = FNV_OFFSET_32
    for b in uuid16[:16]:
        if signed_char and b >= 0x80:
            b |= 0xFFFFFF00       # (int)(signed char)b converted to uint32_t
        h = ((h ^ b) * FNV_PRIME_32) & 0xFFFFFFFF
    return h


def preferred_ds_index(uuid16: bytes, signed_char: Optional[bool] = None) -> int:
    return FIRST + hash_uuid(uuid16, signed_char) % RANGE


class DsIndexTable:
    """Which N each known guest holds, and who claimed it (a module's name)."""

    def __init__(self, signed_char: Optional[bool] = None):
        self.signed_char = char_is_signed() if signed_char is None else signed_char
        self.by_uuid: Dict[bytes, Tuple[int, str]] = {}
        self.taken: Dict[int, bytes] = {}

    def claim(self, uuid16: bytes, owner: str) -> int:
        """The guest's N: the one it holds, else the preferred one or the next free one
        after it; 0 when all 50000 are taken (the guest is then not reported)."""
        held = self.by_uuid.get(uuid16)
        if held is not None:
            return held[0]
        if len(self.taken) >= RANGE:
            return 0
        preferred = preferred_ds_index(uuid16, self.signed_char)
        ds_index = preferred
        while ds_index in self.taken:
            ds_index = FIRST if ds_index == LAST else ds_index + 1
            if ds_index == preferred:
                return 0
        self.taken[ds_index] = uuid16
        self.by_uuid[uuid16] = (ds_index, owner)
        return ds_index

    def release(self, uuid16: bytes) -> None:
        held = self.by_uuid.pop(uuid16, None)
        if held is not None:
            self.taken.pop(held[0], None)

    def release_owner(self, owner: str) -> None:
        """Every number ``owner`` holds (its module stopped or failed)."""
        for uuid16 in [u for u, (_, o) in self.by_uuid.items() if o == owner]:
            self.release(uuid16)

    def __len__(self) -> int:
        return len(self.taken)
