"""``bench/cluster``: ingest and pipeline throughput of a dicomnode cluster (issue 14).

SQLite against PostgreSQL, ``serve --workers 1`` against ``--workers 2``, and 1, 2 and 3
node processes on one PostgreSQL and one shared folder, in one run on the same data;
the per-instance and per-job costs it prints feed the sizing model in docs/scaling.md.
"""
