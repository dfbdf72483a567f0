"""``dicomnode serve --workers N``: N processes on one port, one PostgreSQL, one cluster."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, func, select

from dicomnode.phantom.ct import CTPhantomSpec, write_ct_phantom
from dicomnode.store.tables import AssociationRow, InstanceRow, NodeRow
from dicomnode.testing.ports import LOOPBACK, free_port, wait_for_port
from dicomnode.testing.postgres import PostgresCluster
from dicomnode.testing.process import ManagedProcess, poll_until
from dicomnode.testing.storescu import storescu

AE = "DICOMNODE"
WORKERS = 2
ASSOCIATIONS = 12  # each its own connection: the kernel spreads them over the workers


@pytest.fixture
def database(postgres: PostgresCluster) -> Iterator[str]:
    name = postgres.create_database()
    yield postgres.url(name, driver="psycopg")
    postgres.drop_database(name)


def _config(tmp_path: Path, port: int, database: str) -> Path:
    path = tmp_path / "dicomnode.yaml"
    document = {
        "node": {"ae_title": AE, "host": LOOPBACK, "port": port, "id": "host-a"},
        "storage": {"path": str(tmp_path / "var")},
        "database": {"url": database},
        "rules_dir": str(tmp_path / "rules"),
        "admin": {"port": 0},
        "completion": {"quiet_seconds": 1.0, "settle_seconds": 0.5},
        "logging": {"format": "json"},
    }
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def test_two_workers_share_the_port_and_store_everything_once(
    tmp_path: Path, database: str
) -> None:
    port = free_port()
    config = _config(tmp_path, port, database)
    series = write_ct_phantom(
        tmp_path / "ct", CTPhantomSpec(slices=ASSOCIATIONS, rows=64, columns=64)
    )
    command = [sys.executable, "-m", "dicomnode", "serve", "--workers", str(WORKERS)]
    with ManagedProcess(
        [*command, "--config", str(config)], log_path=tmp_path / "serve.log"
    ) as serve:
        wait_for_port(port, timeout=60)
        engine = create_engine(database)
        try:
            with engine.connect() as conn:
                poll_until(
                    lambda: conn.scalar(select(func.count()).select_from(NodeRow)) == WORKERS,
                    timeout=60,
                    what="both workers in the nodes table",
                )
            # One association per file, several at once.
            with ThreadPoolExecutor(4) as pool:
                results = list(
                    pool.map(lambda p: storescu([p], ae_title=AE, port=port), series.paths)
                )
            assert [r.returncode for r in results] == [0] * ASSOCIATIONS
            with engine.connect() as conn:
                stored = conn.scalar(select(func.count()).select_from(InstanceRow))
                by_worker = dict(
                    conn.execute(
                        select(AssociationRow.node_id, func.count()).group_by(
                            AssociationRow.node_id
                        )
                    ).all()
                )
                nodes = set(conn.scalars(select(NodeRow.id)))
        finally:
            engine.dispose()
        assert stored == ASSOCIATIONS
        assert nodes == {"host-a-w0", "host-a-w1"}
        # The kernel hashes each connection to a worker: with 12 both get some (all on
        # one would be 2 * 0.5**12, about 1 in 2000).
        assert set(by_worker) == nodes, by_worker
        serve.popen.send_signal(signal.SIGTERM)
        assert serve.wait(90) == 0, serve.log_text()
    assert '"workers_started"' in serve.log_text()


def test_workers_on_sqlite_are_refused_with_the_reason(tmp_path: Path) -> None:
    config = tmp_path / "dicomnode.yaml"
    config.write_text(
        yaml.safe_dump({"storage": {"path": str(tmp_path / "var")}, "node": {"port": free_port()}}),
        encoding="utf-8",
    )
    result = subprocess.run(
        [sys.executable, "-m", "dicomnode", "serve", "--workers", "2", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "--workers 2 needs a PostgreSQL database (database.url)" in result.stderr
