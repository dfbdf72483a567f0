"""Shared fixtures: nouns for the things tests work with."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dicomnode.config import Config
from dicomnode.logs import LOG_CACHE_VARIABLE

# Tests call the CLI's main() in-process (it configures logging) and, in other files on
# the same pytest-xdist worker, capture log events: cached loggers would miss the capture.
os.environ[LOG_CACHE_VARIABLE] = "0"
from dicomnode.node import Node
from dicomnode.testing.node import NodeProcess
from dicomnode.testing.ports import LOOPBACK
from dicomnode.testing.postgres import PostgresCluster, find_bindir

REAL_CT_FOLDER = "ct-head-phantom-philips"

# The index backends a suite runs on when it asks for ``database_url`` (a module opts in
# with ``pytestmark = pytest.mark.usefixtures("database_url")``; its nodes then use it).
BACKENDS = ("sqlite", "postgresql+psycopg", "postgresql+psycopg2")
# The drivers differ only in what the store layer sends and reads back (RETURNING,
# rowcount, types, locks), so psycopg2 runs the suites of that layer and of the cluster;
# above it, routing, outbox, pipeline and admin run the same SQL on SQLite and psycopg 3.
ALL_DRIVERS = ("tests/store/", "tests/cluster/")

# Short clocks so completion tests finish in seconds; each test states what it relies on.
FAST_COMPLETION = {"quiet_seconds": 4.0, "settle_seconds": 1.0, "max_wait_seconds": 120.0}


@pytest.fixture(scope="session")
def real_ct_dir() -> Path:
    """The real Philips CT series from ``shared/dicom`` (``DICOMNODE_TEST_DATA``)."""
    root = os.environ.get("DICOMNODE_TEST_DATA")
    if not root:
        pytest.skip("DICOMNODE_TEST_DATA is not set: the real CT series is not available")
    folder = Path(root) / REAL_CT_FOLDER
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent: the real CT series is not available")
    return folder


@pytest.fixture(scope="session")
def real_ct_images(real_ct_dir: Path) -> list[Path]:
    """The 28 image files of the real CT series (without DIRFILE and LICENSE)."""
    return sorted(p for p in real_ct_dir.iterdir() if p.name.startswith("I"))


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """One throw-away PostgreSQL cluster for the session; skipped where none is installed.

    CI installs PostgreSQL, so there (``CI=true``) a missing one fails instead: a skip
    would hide that a third of the store tests never ran.
    """
    missing = [name for name in ("psycopg", "psycopg2") if importlib.util.find_spec(name) is None]
    if find_bindir() is None:
        missing.append("PostgreSQL (apt-get install postgresql)")
    if missing:
        reason = f"not installed: {', '.join(missing)}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    with PostgresCluster() as cluster:
        yield cluster


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Each suite that asks for ``database_url`` gets its backends (see ``ALL_DRIVERS``)."""
    if "database_url" not in metafunc.fixturenames:
        return
    if any("database_url" in m.args[:1] for m in metafunc.definition.iter_markers("parametrize")):
        return  # the test names its own backends
    where = Path(metafunc.definition.path).as_posix()
    everywhere = any(f"/{folder}" in where for folder in ALL_DRIVERS)
    backends = BACKENDS if everywhere else BACKENDS[:2]
    metafunc.parametrize("database_url", backends, indirect=True, scope="function")


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty index database: SQLite in tmp_path, or a new PostgreSQL one."""
    backend: str = request.param
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'index.sqlite'}"
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    name = cluster.create_database()
    yield cluster.url(name, driver=backend.removeprefix("postgresql+"))
    cluster.drop_database(name)


def _database_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The ``database`` setting for nodes of a test that asked for ``database_url``."""
    if "database_url" not in request.fixturenames:
        return {}
    return {"database": {"url": request.getfixturevalue("database_url")}}


def make_config(tmp_path: Path, **overrides: Any) -> Config:
    """A node configuration on an ephemeral loopback port with fast completion."""
    data: dict[str, Any] = {
        "node": {"host": LOOPBACK, "port": 0, "idle_timeout_seconds": 5.0},
        "storage": {"path": str(tmp_path / "var")},
        "completion": dict(FAST_COMPLETION),
        "rules_dir": str(tmp_path / "rules"),
        "admin": {"port": 0},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return Config.model_validate(data)


@pytest.fixture
def node_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Node]]:
    """Start in-process nodes (stopped at the end of the test)."""
    started: list[Node] = []
    database = _database_settings(request)

    def start(**overrides: Any) -> Node:
        node = Node(make_config(tmp_path, **{**database, **overrides}))
        node.start()
        started.append(node)
        return node

    yield start
    for node in reversed(started):
        node.stop()


@pytest.fixture
def node(node_factory: Callable[..., Node]) -> Node:
    """A running in-process node with fast completion clocks."""
    return node_factory()


@pytest.fixture
def node_process(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., NodeProcess]]:
    """Nodes in their own processes, for tests that crash or restart them."""
    made: list[NodeProcess] = []
    database = _database_settings(request)

    def make(**settings: Any) -> NodeProcess:
        merged = {"completion": dict(FAST_COMPLETION), **database, **settings}
        proc = NodeProcess(tmp_path / f"node{len(made)}", merged)
        made.append(proc)
        return proc

    yield make
    for proc in made:
        proc.stop()
