"""Store errors are classified by the cause ClickHouse names; CLIs print one line per expected failure."""

from __future__ import annotations

import pytest

from tokenledger.errors import EXIT_PERMANENT, EXIT_TRANSIENT, ConfigError, TransientError, cli_errors
from tokenledger.store.base import StoreRejected, StoreUnavailable, store_error


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("Code: 60. DB::Exception: Table tokenledger.usage_events does not exist. (UNKNOWN_TABLE)", StoreRejected),
        ("Code: 516. DB::Exception: default: Authentication failed. (AUTHENTICATION_FAILED)", StoreRejected),
        ("Code: 62. DB::Exception: Syntax error: failed at position 1. (SYNTAX_ERROR)", StoreRejected),
        ("HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded (Connection refused)", StoreUnavailable),
        ("Code: 241. DB::Exception: Memory limit exceeded. (MEMORY_LIMIT_EXCEEDED)", StoreUnavailable),
        ("Code: 243. DB::Exception: Cannot reserve 1.00 MiB, not enough space. (NOT_ENOUGH_SPACE)", StoreUnavailable),
    ],
)
def test_store_errors_are_classified(message: str, kind: type[Exception]) -> None:
    assert type(store_error(RuntimeError(message))) is kind


def test_cli_errors_print_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    @cli_errors("prog")
    def permanent() -> int:
        raise ConfigError("budget file: unknown timezone 'Mars/Olympus'\n  details the user does not need")

    @cli_errors("prog")
    def transient() -> int:
        raise TransientError("store away")

    assert permanent() == EXIT_PERMANENT
    assert capsys.readouterr().err == "prog: error: budget file: unknown timezone 'Mars/Olympus'\n"
    assert transient() == EXIT_TRANSIENT
    assert capsys.readouterr().err == "prog: unavailable, try again later: store away\n"
