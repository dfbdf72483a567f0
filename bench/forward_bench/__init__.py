"""The forwarding benchmark behind ``bench/forward``: the node's outbox against DCMTK storescu.

- ``scenario``: one timed run of each sender to a fresh DCMTK storescp.
- ``run``: command-line options, the order of the runs, the tables and the ratio.

It reuses ``ingest_bench`` (storescp receiver, storescu sender, machine, py-spy summary)
and ``benchkit`` (node log events, storescp arrivals, process memory and CPU).
"""
