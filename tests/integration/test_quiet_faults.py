"""A 20 s broker outage under load: a handful of log lines, not thousands, and the totals still exact.

The pricing worker, the spend worker and the store sink run as separate processes on their own
Apache Kafka broker; the broker is stopped for 20 s while events stream, then started again.
Every process says the outage once when it starts and once when it ends; the connection errors
of its Kafka clients are counted, not logged.
"""

from __future__ import annotations

import random
import re
import threading
import time
from pathlib import Path

from infra.broker import KafkaBroker
from tests.integration.test_crash_exact import Rig, make_events

OUTAGE_S = 20
# A log line: ours and the libraries' ("[time] LEVEL name: ..."), Faust's ("[time] [pid] [LEVEL] ..."),
# or librdkafka's own stderr format ("%3|...|FAIL|...") if a client bypassed Python logging.
_LEVEL = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|^%[0-4]\|")


def test_a_20_s_broker_outage_is_two_lines_per_process(own_broker: KafkaBroker, tmp_path: Path) -> None:
    rig = Rig(own_broker, tmp_path)
    rig.sink.env.pop("TOKENLEDGER_RDKAFKA_DEBUG", None)  # the crash tests' group trail: not a fault's noise
    rig.sink.env["TOKENLEDGER_APP_ID"] = rig.app_id  # its stage watch looks at this rig's worker groups
    events = make_events(random.Random(20))
    rig.start()
    try:
        sizes: dict[Path, int] = {}

        def outage(i: int) -> None:
            if i == len(events) // 3:
                sizes.update({p.log: p.log.stat().st_size for p in rig.processes()})
                own_broker.stop()
                threading.Timer(OUTAGE_S, own_broker.start).start()

        rig.publish(events, outage, random.Random(21))
        rig.wait_drained()
        time.sleep(6)  # the "back" lines come once the clients have been quiet for 5 s
        said: dict[str, list[str]] = {}
        for p in rig.processes():
            with p.log.open("rb") as f:
                f.seek(sizes[p.log])
                said[p.log.name] = f.read().decode(errors="replace").splitlines()
        rig.verify(events)
    finally:
        rig.stop()
    loud = {name: [line for line in lines if _LEVEL.search(line)] for name, lines in said.items()}
    report = "\n".join(f"--- {n}: {len(v)} lines\n" + "\n".join(v[:40]) for n, v in loud.items())

    for lines in loud.values():
        assert len(lines) == 2, report  # the outage's two lines, nothing else above INFO
        assert sum("Kafka broker" in line and "unavailable" in line for line in lines) == 1, report
        assert sum("Kafka broker" in line and "back after" in line for line in lines) == 1, report
    assert sum(len(v) for v in said.values()) <= 200, report  # every level, INFO included: a bounded handful
