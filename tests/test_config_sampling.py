"""Which sampling rate and polling interval apply where (lookupPacketSamplingRate)."""

from __future__ import annotations

import pytest

from hsflowd.config import (Config, parse_config, polling_interval_for, print_speed,
                            sampling_rate_for)
from hsflowd.config.sampling import app_sampling_rate, lookup_app

M, G = 10 ** 6, 10 ** 9


def conf(body: str = "") -> Config:
    return parse_config("sflow { collector { ip=192.0.2.1 } " + body + " }")


@pytest.mark.parametrize("bps,name", [
    (0, "0"), (999, "999"), (1000, "1K"), (1500, "1K"), (10 * M, "10M"), (100 * M, "100M"),
    (G, "1G"), (int(2.5 * G), "2G"), (10 * G, "10G"), (25 * G, "25G"), (40 * G, "40G"),
    (100 * G, "100G"), (400 * G, "400G"), (10 ** 12, "1T"), (1500 * G, "1T"),
])
def test_print_speed(bps, name):
    assert print_speed(bps) == name


DEFAULT = ""
RATIO = "sampling.bps_ratio=2000000"
RATIO_OFF = "sampling=1234 sampling.bps_ratio=0"
BY_SPEED = "sampling.10G=5000 sampling.1G=256 sampling.bps_ratio=100"
GLOBAL = "sampling=1234"

# (config body, interface speed, oper up, pcap rule's sampling=, expected 1-in-N)
TABLE = [
    # the speed default: one sample per Mbit/s, never denser than 1-in-100
    (DEFAULT, 10 * M, True, None, 100),
    (DEFAULT, 100 * M, True, None, 100),
    (DEFAULT, G, True, None, 1000),
    (DEFAULT, 10 * G, True, None, 10000),
    (DEFAULT, 25 * G, True, None, 25000),
    (DEFAULT, 40 * G, True, None, 40000),
    (DEFAULT, 100 * G, True, None, 100000),
    (DEFAULT, int(2.5 * G), True, None, 2500),
    # sampling=N is ignored where the speed is known...
    (GLOBAL, G, True, None, 1000),
    # ...and used where it is not
    (GLOBAL, 0, True, None, 1234),
    (GLOBAL, None, True, None, 1234),
    (DEFAULT, 0, True, None, 400),
    # bps_ratio: speed / ratio, at least 1
    (RATIO, 10 * M, True, None, 5),
    (RATIO, G, True, None, 500),
    (RATIO, 100 * G, True, None, 50000),
    (RATIO, M, True, None, 1),
    (RATIO, 0, True, None, 400),
    ("sampling.bps_ratio=1", 100 * G, True, None, 0xFFFFFFFF),
    # bps_ratio=0: back to sampling=N on every link
    (RATIO_OFF, 10 * M, True, None, 1234),
    (RATIO_OFF, 100 * G, True, None, 1234),
    # sampling.<speed> beats bps_ratio; other speeds still use the ratio
    (BY_SPEED, G, True, None, 256),
    (BY_SPEED, 10 * G, True, None, 5000),
    (BY_SPEED, 25 * G, True, None, 250000000),
    (BY_SPEED, int(1.5 * G), True, None, 256),     # a 1.5G link is named "1G"
    ("sampling.1G=0", G, True, None, 0),              # 0 turns sampling off
    ("sampling.1g=50", G, True, None, 1000),          # case matters
    ("sampling.100M=64", 100 * M, True, None, 64),
    # down: nothing to sample
    (DEFAULT, G, False, None, 0),
    (GLOBAL, 0, False, None, 0),
    (BY_SPEED, G, False, None, 0),
    # a pcap { sampling=N } rule beats everything, as in mod_pcap (even when down)
    (BY_SPEED, G, True, 77, 77),
    (DEFAULT, 0, True, 77, 77),
    (DEFAULT, G, False, 77, 77),
    (DEFAULT, G, True, 0, 0),
]


@pytest.mark.parametrize("body,speed,up,rule,expected", TABLE)
def test_sampling_rate_table(body, speed, up, rule, expected):
    assert sampling_rate_for(conf(body), speed, up, rule) == expected


def test_polling_settings_do_not_change_sampling():
    assert sampling_rate_for(conf("polling.1G=10"), G) == 1000
    assert sampling_rate_for(conf("polling.bps_ratio=10"), G) == 1000


def test_app_lookup_deepest_dotted_prefix_wins():
    settings = {"app": 1, "app.x": 2, "app.x.y": 3, "http": 4}
    assert lookup_app(settings, "app.x.y.z") == 3
    assert lookup_app(settings, "app.x.y") == 3
    assert lookup_app(settings, "app.x.yy") == 2
    assert lookup_app(settings, "app.q") == 1
    assert lookup_app(settings, "apple") is None
    assert lookup_app(settings, "HTTP") is None
    assert lookup_app(settings, "http") == 4
    assert lookup_app({}, "http") is None


def test_app_sampling_and_polling():
    config = conf("sampling=300 polling=25 sampling.http=50 sampling.app.x=10 "
                  "polling.app=60 polling.app.x.y=5")
    assert app_sampling_rate(config, "http") == 50
    assert app_sampling_rate(config, "app.x.q") == 10
    assert app_sampling_rate(config, "app.z") == 300
    assert polling_interval_for(config) == 25
    assert polling_interval_for(config, None) == 25
    assert polling_interval_for(config, "app.x.q") == 60     # sampling.app.x does not hide it
    assert polling_interval_for(config, "app.x.y.z") == 5
    assert polling_interval_for(config, "http") == 25
