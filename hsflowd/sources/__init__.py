"""Counter sources: each reads the host and returns sFlow records, knowing nothing of
datagrams or sockets.

    host      data source 2:1, the host counter sample (HostSource in host.py)
    procfs    pure parsers for the /proc text the sources read
"""

__all__ = ["host", "procfs"]
