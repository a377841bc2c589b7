"""rtnetlink requests on a plain socket, read straight from the bytes.

pyroute2 decodes each message into a tree of dict-like objects that refer to one another:
about 27 KB of heap per link message, 3 KB per address and 4 KB per statistics message,
which only the cycle collector frees, long after.  A dump of 1,000 links is 27 MB of it at
once, and the heap it leaves behind is not given back.  The interface table keeps a dozen
attributes of a link, so it reads them from the bytes: a dump is received one datagram at a
time, and each message is parsed and dropped before the next datagram is read.

``NetlinkSocket.request`` sends one request and yields the messages of the answer;
``messages`` splits a datagram (an event, say) into messages, ``attributes`` a message's
attributes, or a nested attribute's, into {type: payload}.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from typing import Dict, Iterator, Tuple

__all__ = ["NetlinkSocket", "attributes", "is_gone", "messages"]

NLMSG_HDRLEN = 16
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLA_TYPE_MASK = 0x3FFF      # leaves out NLA_F_NESTED and NLA_F_NET_BYTEORDER

_NLMSGHDR = struct.Struct("=IHHII")     # length, type, flags, sequence number, port id
_NLA = struct.Struct("=HH")             # length, type
_ERROR = struct.Struct("=i")


def messages(data: bytes) -> Iterator[Tuple[int, int, bytes]]:
    """(type, sequence number, body) of each message in one datagram; the body is what
    follows the netlink header (the family's fixed header, then attributes)."""
    offset = 0
    while offset + NLMSG_HDRLEN <= len(data):
        length, kind, _, seq, _ = _NLMSGHDR.unpack_from(data, offset)
        if length < NLMSG_HDRLEN or offset + length > len(data):
            return
        yield kind, seq, data[offset + NLMSG_HDRLEN:offset + length]
        offset += (length + 3) & ~3


def is_gone(exc: OSError) -> bool:
    """The error answer to a request about a link that no longer exists."""
    return exc.errno in (errno.ENODEV, errno.ENOENT)


def attributes(data: bytes, offset: int = 0) -> Dict[int, bytes]:
    """{type: payload} of the attributes from ``offset`` to the end (the first of a type
    wins, as pyroute2's get_attr)."""
    out: Dict[int, bytes] = {}
    end = len(data)
    while offset + 4 <= end:
        length, kind = _NLA.unpack_from(data, offset)
        if length < 4 or offset + length > end:
            break
        out.setdefault(kind & NLA_TYPE_MASK, data[offset + 4:offset + length])
        offset += (length + 3) & ~3
    return out


class NetlinkSocket:
    """A NETLINK_ROUTE socket for requests, bound to the namespace it was opened in.

    An answer never waits in a queue of ours: ``request`` yields each message as its
    datagram arrives.  A dump the caller stopped reading is read to its end before the
    next request (the kernel runs one dump at a time per socket)."""

    TIMEOUT = 5.0   # the kernel answers at once: this only keeps the agent from hanging for good

    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                  socket.NETLINK_ROUTE)
        try:
            self.sock.settimeout(self.TIMEOUT)
            self.sock.bind((0, 0))
        except BaseException:
            self.sock.close()
            raise
        self.seq = 0
        self._unfinished = 0        # the sequence number of a dump not read to its end
        self._peek = bytearray(NLMSG_HDRLEN)

    def fileno(self) -> int:
        return self.sock.fileno()

    def request(self, kind: int, header: bytes, dump: bool = False) -> Iterator[Tuple[int, bytes]]:
        """(type, body) of each message answering one request (``header``: the family's
        fixed header).  A "get" has one answer; an error answer raises OSError."""
        if self._unfinished:
            self._finish(self._unfinished)
        self.seq = seq = (self.seq + 1) & 0xFFFFFFFF or 1
        flags = NLM_F_REQUEST | (NLM_F_DUMP if dump else 0)
        self.sock.send(_NLMSGHDR.pack(NLMSG_HDRLEN + len(header), kind, flags, seq, 0) + header)
        self._unfinished = seq if dump else 0
        while True:
            for kind_, seq_, body in messages(self._receive()):
                if seq_ != seq:
                    continue            # the rest of an answer given up on earlier
                if kind_ == NLMSG_DONE or kind_ == NLMSG_ERROR:
                    self._unfinished = 0
                    code = _ERROR.unpack_from(body)[0] if len(body) >= 4 else 0
                    if code < 0:
                        raise OSError(-code, os.strerror(-code))
                    return
                yield kind_, body
                if not dump:
                    return

    def _finish(self, seq: int) -> None:
        self._unfinished = 0
        while True:
            for kind, seq_, _ in messages(self._receive()):
                if seq_ == seq and kind in (NLMSG_DONE, NLMSG_ERROR):
                    return

    def _receive(self) -> bytes:
        """One datagram, however long (MSG_TRUNC makes the peek say its length)."""
        size = self.sock.recv_into(self._peek, NLMSG_HDRLEN, socket.MSG_PEEK | socket.MSG_TRUNC)
        return self.sock.recv(max(size, NLMSG_HDRLEN))

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "NetlinkSocket":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
