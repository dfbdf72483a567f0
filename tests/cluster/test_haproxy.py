"""HAProxy in front of two nodes, from the shipped examples/haproxy.cfg (issue 14, item 5).

DCMTK's storescu and echoscu talk to HAProxy's port only; which node took an instance is
read from each node's admin API. When one node is stopped, HAProxy's health check
(``/readyz`` on the admin port) takes it out, and the next associations go to the other.
"""

from __future__ import annotations

import json
import os
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pydicom
import pytest

from dicomnode.phantom import CTPhantomSeries, CTPhantomSpec, write_ct_phantom
from dicomnode.testing.echoscu import echoscu
from dicomnode.testing.haproxy import (
    ConfigShapeError,
    HAProxy,
    Upstream,
    check_config,
    haproxy_binary,
    render_config,
)
from dicomnode.testing.node import NODE_AE, NodeProcess
from dicomnode.testing.ports import LOOPBACK, free_port
from dicomnode.testing.process import poll_until
from dicomnode.testing.storescu import StoreSCUProcess, storescu
from dicomnode.testing.storescu_log import parse_storescu_log

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "haproxy.cfg"
SLICES = 12


@pytest.fixture(scope="module")
def haproxy_exe() -> Path:
    """HAProxy, or a skip; CI installs it, so there (``CI=true``) a missing one fails."""
    found = haproxy_binary()
    if found is None:
        reason = "HAProxy is not installed (apt-get install haproxy)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def admin_get(node: NodeProcess, path: str) -> Any:
    url = f"http://{LOOPBACK}:{node.config.admin.port}{path}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def stored_uids(node: NodeProcess) -> set[str]:
    """SOP Instance UIDs of every series the node has indexed (its admin API)."""
    uids: set[str] = set()
    for series in admin_get(node, "/api/series?limit=1000"):
        quoted = urllib.parse.quote(series["series_uid"], safe="")
        detail = admin_get(node, f"/api/series/{quoted}")
        uids.update(instance["sop_instance_uid"] for instance in detail["instances"])
    return uids


def sop_uids(series: CTPhantomSeries) -> set[str]:
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in series.paths}


def store_through(proxy: HAProxy, series: CTPhantomSeries) -> set[str]:
    """storescu to HAProxy's port; the SOP Instance UIDs the sender saw acknowledged."""
    result = storescu(list(series.paths), ae_title=NODE_AE, port=proxy.port)
    attempts = parse_storescu_log(result.stdout)
    assert result.returncode == 0, result.stdout[-3000:]
    assert len(attempts) == len(series.paths)
    return {a.sop_instance_uid for a in attempts if a.acknowledged and a.sop_instance_uid}


def start_nodes(make: Callable[..., NodeProcess], *settings: dict[str, Any]) -> list[NodeProcess]:
    """One node per settings, each with its own storage and index, admin on a known port."""
    return [make(admin={"port": free_port()}, **extra).start() for extra in settings]


@contextmanager
def haproxy_in_front(exe: Path, nodes: list[NodeProcess]) -> Iterator[HAProxy]:
    """HAProxy from the example before `nodes` (named node0, node1...), checks answered."""
    upstreams = [
        Upstream(f"node{i}", node.port, node.config.admin.port) for i, node in enumerate(nodes)
    ]
    with HAProxy(EXAMPLE, upstreams, binary=exe) as running:
        running.wait_for_first_checks()  # a server counts as UP before its first check
        yield running


@pytest.fixture
def nodes(node_process: Callable[..., NodeProcess]) -> list[NodeProcess]:
    return start_nodes(node_process, {}, {})


@pytest.fixture
def proxy(haproxy_exe: Path, nodes: list[NodeProcess]) -> Iterator[HAProxy]:
    with haproxy_in_front(haproxy_exe, nodes) as running:
        assert running.check_status() == {"node0": "L7OK", "node1": "L7OK"}
        yield running


def test_the_example_configuration_is_valid(haproxy_exe: Path) -> None:
    result = check_config(EXAMPLE, haproxy_exe)
    assert result.returncode == 0, result.stdout


def test_the_rendered_example_differs_only_in_addresses_and_socket(tmp_path: Path) -> None:
    upstreams = [Upstream("a", 1001, 2001), Upstream("b", 1002, 2002), Upstream("c", 1003, 2003)]
    example = EXAMPLE.read_text()
    rendered = render_config(
        example, port=1000, upstreams=upstreams, stats_socket=tmp_path / "s", privileged=True
    )
    changed = set(rendered.splitlines()) - set(example.splitlines())
    assert changed == {
        "    bind 127.0.0.1:1000",
        f"    stats socket {tmp_path / 's'} mode 660 level admin",
        "    server a 127.0.0.1:1001 check port 2001",
        "    server b 127.0.0.1:1002 check port 2002",
        "    server c 127.0.0.1:1003 check port 2003",
    }
    kept = set(example.splitlines()) - set(rendered.splitlines())
    assert all(line.lstrip().startswith(("bind ", "stats socket ", "server ")) for line in kept)


def test_an_unprivileged_rendering_leaves_out_user_group_and_chroot(tmp_path: Path) -> None:
    """Only root may switch user or chroot; a developer's HAProxy runs as themselves."""
    example = EXAMPLE.read_text()
    rendered = render_config(
        example,
        port=1000,
        upstreams=[Upstream("a", 1001, 2001)],
        stats_socket=tmp_path / "s",
        privileged=False,
    )
    gone = set(example.splitlines()) - set(rendered.splitlines())
    words = {line.split()[0] for line in gone}
    assert words == {"bind", "stats", "server", "user", "group", "chroot"}


@pytest.mark.parametrize(
    ("edit", "complaint"),
    [
        (lambda t: t.replace("bind :11112", "bind :11112\n    bind :104"), "bind"),
        (lambda t: t.replace("check port 8080", "check"), "server NAME"),
        (lambda t: t.replace("    server node2", "    # between\n    server node2"), "together"),
    ],
)
def test_an_example_of_another_shape_is_refused(
    edit: Callable[[str], str], complaint: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigShapeError, match=complaint):
        render_config(
            edit(EXAMPLE.read_text()),
            port=1000,
            upstreams=[Upstream("a", 1001, 2001)],
            stats_socket=tmp_path / "s",
        )


def test_stores_through_haproxy_and_fails_over_when_a_node_stops(
    proxy: HAProxy, nodes: list[NodeProcess], tmp_path: Path
) -> None:
    first = write_ct_phantom(tmp_path / "first", CTPhantomSpec(slices=SLICES, rows=64, columns=64))
    sent = sop_uids(first)
    assert store_through(proxy, first) == sent
    held = [stored_uids(node) for node in nodes]
    assert held[0] | held[1] == sent, "every acknowledged instance is in one of the nodes"
    assert not held[0] & held[1], "and in only one: one association goes to one node"

    # Stop the node that took the series: only failover can get the next ones stored.
    busy = 0 if held[0] else 1
    other = 1 - busy
    nodes[busy].stop()  # SIGTERM by PID: the graceful stop systemd asks for
    proxy.wait_for_status(f"node{busy}", "DOWN")

    second = write_ct_phantom(
        tmp_path / "second", CTPhantomSpec(slices=SLICES, rows=64, columns=64, seed=1)
    )
    again = sop_uids(second)
    assert store_through(proxy, second) == again
    assert again <= stored_uids(nodes[other])
    for _ in range(2):  # with one node left, every association must reach it
        answer = echoscu(ae_title=NODE_AE, port=proxy.port)
        assert answer.returncode == 0, answer.stdout
    assert proxy.server_status() == {f"node{busy}": "DOWN", f"node{other}": "UP"}


def test_a_node_that_is_up_but_not_ready_gets_no_association(
    haproxy_exe: Path, node_process: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    """/readyz, not a TCP connect: a node whose spool is above its high-water mark still
    listens on both ports, yet HAProxy must send every association to the other one."""
    full = {"storage": {"high_water_percent": 0.0001}}  # any disk is fuller than this
    nodes = start_nodes(node_process, full, {})
    with haproxy_in_front(haproxy_exe, nodes) as proxy:
        proxy.wait_for_check("node0", "L7STS")  # 503 from /readyz
        proxy.wait_for_status("node0", "DOWN")
        assert proxy.check_status()["node1"] == "L7OK"
        series = write_ct_phantom(tmp_path / "ct", CTPhantomSpec(slices=4, rows=32, columns=32))
        for _ in range(2):  # the second association would be node0's turn with both up
            assert store_through(proxy, series) == sop_uids(series)
            assert echoscu(ae_title=NODE_AE, port=proxy.port).returncode == 0
    assert stored_uids(nodes[0]) == set()
    assert stored_uids(nodes[1]) == sop_uids(series)


def test_a_refused_connection_goes_to_the_other_node_before_any_check_notices(
    proxy: HAProxy, nodes: list[NodeProcess]
) -> None:
    """``retries`` + ``option redispatch``: the seconds before a dead node is marked down."""
    proxy.command("disable health dicomnode/node0")  # so only redispatch can help
    nodes[0].kill()
    for _ in range(2):  # with both in turn, one of these is first sent to node0
        answer = echoscu(ae_title=NODE_AE, port=proxy.port)
        assert answer.returncode == 0, answer.stdout
    assert proxy.server_status()["node0"] != "DOWN"  # "no check": considered up


def test_a_drained_node_gets_no_new_association(
    proxy: HAProxy, nodes: list[NodeProcess], tmp_path: Path
) -> None:
    """The planned stop of docs/scaling.md begins with ``set server ... state drain``."""
    series = write_ct_phantom(tmp_path / "ct", CTPhantomSpec(slices=4, rows=32, columns=32))
    proxy.set_state("node0", "drain")
    assert proxy.server_status()["node0"] == "DRAIN"
    for _ in range(2):  # with both in turn, one of these would go to node0
        assert store_through(proxy, series) == sop_uids(series)
        assert echoscu(ae_title=NODE_AE, port=proxy.port).returncode == 0
    assert stored_uids(nodes[0]) == set()
    assert stored_uids(nodes[1]) == sop_uids(series)
    assert proxy.check_status()["node0"] == "L7OK", "drained, not down: still checked"


@pytest.mark.slow
def test_a_node_killed_mid_association_loses_nothing_acknowledged_and_the_retry_goes_on(
    proxy: HAProxy, nodes: list[NodeProcess], tmp_path: Path
) -> None:
    """The sender sees its association end; what it saw acknowledged is on the killed
    node's disk; sending again through HAProxy reaches the other node and completes."""
    series = write_ct_phantom(tmp_path / "ct", CTPhantomSpec(slices=400, rows=64, columns=64))
    sent = sop_uids(series)
    with StoreSCUProcess(list(series.paths), ae_title=NODE_AE, port=proxy.port) as sender:
        poll_until(
            lambda: sum(a.acknowledged for a in sender.attempts()) >= 20,
            timeout=60,
            what="20 instances acknowledged through HAProxy",
        )
        busy = next(i for i, node in enumerate(nodes) if admin_get(node, "/api/series"))
        nodes[busy].kill()  # SIGKILL by PID, in the middle of the association
        assert sender.wait(timeout=60) != 0, "the sender must see its association fail"
        acked = {a.sop_instance_uid for a in sender.attempts() if a.acknowledged}
    assert 20 <= len(acked) < len(sent), "the kill must land in the middle of the transfer"

    other = 1 - busy
    proxy.wait_for_check(f"node{busy}", "L4CON")  # refused: nothing listens any more
    proxy.wait_for_status(f"node{busy}", "DOWN")
    assert store_through(proxy, series) == sent  # the sender's retry: a new association
    assert stored_uids(nodes[other]) == sent

    nodes[busy].start()  # back on the same ports: HAProxy takes it in again
    proxy.wait_for_status(f"node{busy}", "UP")
    assert proxy.check_status()[f"node{busy}"] == "L7OK"
    assert acked <= stored_uids(nodes[busy]), "an acknowledged instance was lost"
