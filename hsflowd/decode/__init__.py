"""What ``hsflowd decode`` shows people: the views over the wire format in hsflowd.sflow.

- ``packet``: a sampled packet header read into sflowtool's fields (dpkt, imported only when a
  header is decoded);
- ``sflowtool``: sflowtool's ``-l`` (one CSV line per sample) and ``-g`` (grep-friendly) forms;
- ``metrics``: sFlow-RT's host and interface metrics from counter deltas, and ``--summary``.
"""
