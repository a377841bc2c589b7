"""What ``hsflowd decode`` shows people: the views over the wire format in hsflowd.sflow.

- ``capture``: the sFlow datagrams in a pcap or pcapng file (dpkt's readers);
- ``packet``: a sampled packet header read into sflowtool's fields (dpkt's header layouts);
- ``sflowtool``: sflowtool's ``-l`` (one CSV line per sample) and ``-g`` (grep-friendly) forms;
- ``metrics``: sFlow-RT's host and interface metrics from counter deltas, and ``--summary``.
"""
