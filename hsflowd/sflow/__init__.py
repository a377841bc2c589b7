"""sFlow v5 wire format: structures, encoder, datagram builder and decoder.

Import from here: ``from hsflowd.sflow import FlowSample, SampledHeader, DatagramBuilder``.
"""

from .counters import *  # noqa: F401,F403
from .counters import UNKNOWN32, UNKNOWN64, UNKNOWN_PERCENT  # noqa: F401
from .custom import *  # noqa: F401,F403
from .datagram import DEFAULT_DATAGRAM_BYTES, MAX_DATAGRAM_BYTES, MIN_DATAGRAM_BYTES, DatagramBuilder  # noqa: F401
from .decode import decode_datagram, to_dict, to_text  # noqa: F401
from .drops import DROP_REASONS, drop_reason_code, drop_reason_name  # noqa: F401
from .flows import *  # noqa: F401,F403
from .samples import *  # noqa: F401,F403
from .tlv import COUNTERS, FLOWS, SAMPLES, Record, UnknownRecord  # noqa: F401
from .xdr import DecodeError, EncodeError  # noqa: F401
