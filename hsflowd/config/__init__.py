"""hsflowd.conf: grammar, typed model, sampling-rate rules and the .auto file.

    config = load_config("/etc/hsflowd.conf")     # ConfigError: "FILE:LINE: what is wrong"
    for line in config.warnings: log.warning(line)
    for name in config.unsupported: log.warning("%s { } is not supported yet", name)
    for line in missing_devices(config, *host_interfaces()): log.warning(line)  # agent=eth9
    rate = sampling_rate_for(config, if_speed=10**9)  # 1000, the 1G default

The keyword table in keywords.py is the single list of keywords, ranges and defaults.
"""

from __future__ import annotations

import os
import re
import stat

from .autofile import AutoFile, render_auto, write_auto
from .describe import describe
from .devices import host_interfaces, missing_devices
from .errors import ConfigError
from .grammar import parse_config
from .keywords import BLOCKS
from .model import (AgentCidr, Collector, Config, ContainerdConfig, DockerConfig, DropmonConfig,
                    JsonConfig, K8sConfig, KvmConfig, NflogConfig, OvsConfig, PcapRule, PsampleConfig,
                    SystemdConfig, TcpConfig, UlogConfig)
from .sampling import (app_sampling_rate, lookup_app, polling_interval_for, print_speed,
                       sampling_rate_for)

DEFAULT_PATH = "/etc/hsflowd.conf"
DEFAULT_AUTO_PATH = "/etc/hsflowd.auto"

__all__ = ["AgentCidr", "AutoFile", "BLOCKS", "Collector", "Config", "ConfigError",
           "ContainerdConfig", "DockerConfig", "DropmonConfig", "JsonConfig", "K8sConfig",
           "KvmConfig", "NflogConfig", "OvsConfig", "PcapRule", "PsampleConfig", "SystemdConfig",
           "TcpConfig", "UlogConfig",
           "app_sampling_rate", "describe", "host_interfaces", "load_config", "lookup_app",
           "missing_devices", "parse_config",
           "polling_interval_for", "print_speed", "render_auto", "sampling_rate_for",
           "write_auto", "DEFAULT_PATH", "DEFAULT_AUTO_PATH"]


MAX_CONFIG_BYTES = 1 << 20   # the longest real hsflowd.conf seen is a few kB


def read_config_text(path: str) -> str:
    """The text of ``path``, which must be a regular file of at most MAX_CONFIG_BYTES.

    Opened without blocking, so a FIFO or a device cannot hang the agent (its reload
    included); bytes that are not UTF-8 are an error; a UTF-8 byte order mark, as some
    editors write, is dropped."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise ConfigError(path, None, f"cannot read the file: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(path, None, "not a regular file")
        if st.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(path, None, f"{st.st_size} bytes is too big for a config file "
                              f"(the limit is {MAX_CONFIG_BYTES})")
        chunks, size = [], 0
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_CONFIG_BYTES:
                raise ConfigError(path, None, "the file grew past the config size limit while read")
            chunks.append(chunk)
    except OSError as exc:
        raise ConfigError(path, None, f"cannot read the file: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    text = _decode(b"".join(chunks), path)
    return text[1:] if text.startswith("\ufeff") else text


def _decode(data: bytes, path: str) -> str:
    """``data`` as UTF-8.  Other bytes are an error, not replaced: a device name, a host or
    a pattern spelt in them would be taken as something else, silently."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[:exc.start].decode("utf-8").removeprefix("\ufeff")
        lines = re.split(r"\r\n|\r|\n", before)       # as the tokenizer counts lines
        raise ConfigError(path, len(lines), f"byte 0x{data[exc.start]:02x} (column "
                          f"{len(lines[-1]) + 1}) is not UTF-8: save the file as UTF-8") from None


def load_config(path: str = DEFAULT_PATH) -> Config:
    """Read and parse ``path``.  A file that cannot be read is a ConfigError too."""
    return parse_config(read_config_text(path), path)
