"""The embedded broker's generated configuration (no JVM started)."""

from pathlib import Path

from infra.broker import cluster_id, server_properties


def test_cluster_ids_never_look_like_an_option() -> None:
    ids = [cluster_id() for _ in range(5000)]  # a leading "-" comes about once in 64 draws
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
    assert len(set(ids)) == len(ids)


def test_one_node_kraft_on_loopback() -> None:
    props = dict(line.split("=", 1) for line in server_properties(Path("/d"), 19092, 19093).splitlines())
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["log.dirs"] == "/d/logs" and props["offsets.topic.replication.factor"] == "1"
