"""The ingest benchmark behind ``bench/ingest``: one sender, three receivers, same files.

Modules, each owning one thing:

- ``receivers``: the node, DCMTK storescp and Orthanc, each started fresh per run.
- ``sender``: DCMTK storescu, timed, with or without ``TCP_NODELAY``.
- ``measure``: one timed run against one receiver (RSS, CPU, stored count).
- ``machine``: what the figures were measured on.
- ``report``: medians, tables and ratios.
- ``hotspots``: py-spy on the node, reduced to the functions that cost the most.
- ``run``: command-line options and the order of the runs.
"""
