"""The pipeline benchmark behind ``bench/pipeline``: a CT series in, SEG and SR out.

- ``scenario``: one timed run: a fresh storescp as the PACS, a fresh node whose rule
  sends CT through ``ct-tissue-reference``, the series sent in, the results awaited.
- ``run``: command-line options, the tables, the targets and the optional profile.

It reuses ``ingest_bench`` (storescp receiver, storescu sender, machine, py-spy summary)
and ``benchkit`` (node log events, storescp arrivals, process memory and CPU).
"""
