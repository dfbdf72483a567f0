"""LISTEN/NOTIFY: work queued in a committed transaction wakes every node's workers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from dicomnode.store.notify import JOB, Listener, notify
from dicomnode.testing.postgres import PostgresCluster
from dicomnode.testing.process import poll_until


@pytest.fixture(params=["psycopg", "psycopg2"])
def postgres_url(request: pytest.FixtureRequest, postgres: PostgresCluster) -> Iterator[str]:
    name = postgres.create_database()
    yield postgres.url(name, driver=request.param)
    postgres.drop_database(name)


def test_a_committed_notice_reaches_the_listener_and_a_rolled_back_one_never(
    postgres_url: str,
) -> None:
    engine = create_engine(postgres_url)
    heard: list[str] = []
    listener = Listener(engine, heard.append)
    assert Listener.wanted(engine)
    listener.start()
    try:
        # LISTEN runs on the listener's thread: announce until it hears the first one.
        def heard_a_probe() -> bool:
            with Session(engine) as session, session.begin():
                notify(session, "probe")
            return "probe" in heard

        poll_until(heard_a_probe, timeout=30, what="the listener to listen")
        heard.clear()
        with Session(engine) as session:
            session.begin()
            notify(session, "send:never")
            session.rollback()
        with Session(engine) as session, session.begin():
            notify(session, JOB)
        poll_until(lambda: JOB in heard, timeout=30, what="the job notice")
        assert "send:never" not in heard  # delivered in commit order: it would be first
    finally:
        # A stop wakes the listener at once rather than after its 5 s wait: every node
        # of a cluster (and every PostgreSQL test) stops through here.
        listener.stop(timeout=1.0)
        listener.stop()  # a node stopped twice: nothing more happens
        engine.dispose()
    assert not listener._thread.is_alive()


def test_sqlite_needs_no_listener(tmp_path: object) -> None:
    engine = create_engine("sqlite://")
    assert not Listener.wanted(engine)
    with Session(engine) as session, session.begin():
        notify(session, JOB)  # a no-op, not an error
