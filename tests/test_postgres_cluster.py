"""The throw-away PostgreSQL cluster the backend-parametrised suites run on."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from dicomnode.testing.postgres import DRIVERS, PostgresCluster
from dicomnode.testing.process import HarnessError


def _runs(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.usefixtures("postgres")  # skips (or fails in CI) where PostgreSQL is missing
def test_a_cluster_serves_both_drivers_on_loopback_and_leaves_nothing_behind() -> None:
    with PostgresCluster() as cluster:
        folder, pid = cluster.folder, cluster.pid
        assert pid is not None and _runs(pid)
        name = cluster.create_database()
        for driver in DRIVERS:
            engine = create_engine(cluster.url(name, driver))
            with engine.connect() as connection:
                assert connection.execute(text("SELECT host(inet_server_addr())")).scalar() == (
                    "127.0.0.1"
                )
            engine.dispose()
        cluster.drop_database(name)
    assert not _runs(pid)
    assert not folder.exists()
    with pytest.raises(HarnessError):
        _ = cluster.folder
