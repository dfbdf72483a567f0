"""Pieces that ``bench/forward`` and ``bench/pipeline`` share (``bench/ingest`` uses some).

- ``procstats``: a process's resident set, its peak, and its CPU time, children included.
- ``nodelog``: the node's JSON log events, read back with their timestamps.
- ``arrivals``: the files a DCMTK storescp wrote, and when the last one was written.

The receivers, the sender, the machine description and the py-spy summary are
``ingest_bench``'s (``receivers``, ``sender``, ``machine``, ``hotspots``).
"""
