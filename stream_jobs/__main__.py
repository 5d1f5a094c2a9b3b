"""``python -m stream_jobs worker``: run the Faust worker; ``python -m stream_jobs sink``: the store sink.

``TOKENLEDGER_AGENTS`` picks the worker's agents: ``all`` (default), ``pricing`` or ``spend``;
run one process per role to use two cores.
"""

import sys

if sys.argv[1:2] == ["sink"]:
    from stream_jobs.sink_main import main

    raise SystemExit(main(sys.argv[2:]))

from stream_jobs.app import ROLE, app

if ROLE in ("all", "pricing"):
    from stream_jobs import pricing_agent  # noqa: F401 - registers the agent and its tables
if ROLE in ("all", "spend"):
    from stream_jobs import spend_agent  # noqa: F401 - registers the agent and its tables


@app.task  # type: ignore[untyped-decorator]
async def _diagnostics() -> None:
    from stream_jobs.app import SETTINGS  # noqa: PLC0415
    from stream_jobs.diagnostics import install, watch_health  # noqa: PLC0415 - only in the worker process
    from stream_jobs.log_levels import drop_spinner_debug  # noqa: PLC0415
    from tokenledger import quiet  # noqa: PLC0415
    from tokenledger.metrics import serve_from_env  # noqa: PLC0415

    install(app)
    drop_spinner_debug()  # the worker has started: no debug records in the hot path
    quiet.install(SETTINGS, ROLE)  # a broker outage: one line each way, not one per retry
    serve_from_env({"all": 9100, "pricing": 9101, "spend": 9102}[ROLE])
    await watch_health(app, quiet.metadata_probe(SETTINGS.client_config()))  # a silent client: no lines in an outage


if "worker" in sys.argv:
    from stream_jobs.app import SETTINGS, start_control
    from stream_jobs.changelogs import ensure_changelogs
    from stream_jobs.log_levels import quiet_library_debug
    from tokenledger.errors import EXIT_PERMANENT, EXIT_TRANSIENT, ConfigError, TransientError
    from tokenledger.gc_policy import tune_for_throughput

    quiet_library_debug(sys.argv)
    ensure_changelogs(app, SETTINGS)
    try:
        start_control()  # caught up with the control topic before any event is priced or folded
        tune_for_throughput()  # after the control state's replay: it is frozen out of the collector's view
    except TransientError as exc:
        print(f"python -m stream_jobs worker: error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_TRANSIENT) from None
    except ConfigError as exc:
        print(f"python -m stream_jobs worker: error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_PERMANENT) from None

# No embedded web server: several workers share a host, and metrics are exported separately.
if "worker" in sys.argv and "--with-web" not in sys.argv and "--without-web" not in sys.argv:
    sys.argv.append("--without-web")
app.main()
