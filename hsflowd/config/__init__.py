"""hsflowd.conf: grammar, typed model, sampling-rate rules and the .auto file.

    config = load_config("/etc/hsflowd.conf")     # ConfigError: "FILE:LINE: what is wrong"
    for line in config.warnings: log.warning(line)
    for name in config.unsupported: log.warning("%s { } is not supported yet", name)
    rate = sampling_rate_for(config, if_speed=10**9)  # 1000, the 1G default

The keyword table in keywords.py is the single list of keywords, ranges and defaults.
"""

from __future__ import annotations

from .autofile import render_auto, write_auto
from .describe import describe
from .errors import ConfigError
from .grammar import parse_config
from .keywords import BLOCKS
from .model import (AgentCidr, Collector, Config, DropmonConfig, JsonConfig, NflogConfig,
                    OvsConfig, PcapRule, PsampleConfig, UlogConfig)
from .sampling import (app_sampling_rate, lookup_app, polling_interval_for, print_speed,
                       sampling_rate_for)

DEFAULT_PATH = "/etc/hsflowd.conf"
DEFAULT_AUTO_PATH = "/etc/hsflowd.auto"

__all__ = ["AgentCidr", "BLOCKS", "Collector", "Config", "ConfigError", "DropmonConfig",
           "JsonConfig", "NflogConfig", "OvsConfig", "PcapRule", "PsampleConfig", "UlogConfig",
           "app_sampling_rate", "describe", "load_config", "lookup_app", "parse_config",
           "polling_interval_for", "print_speed", "render_auto", "sampling_rate_for",
           "write_auto", "DEFAULT_PATH", "DEFAULT_AUTO_PATH"]


def load_config(path: str = DEFAULT_PATH) -> Config:
    """Read and parse ``path``.  A file that cannot be read is a ConfigError too."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(path, None, f"cannot read the file: {exc.strerror or exc}") from None
    return parse_config(text, path)
