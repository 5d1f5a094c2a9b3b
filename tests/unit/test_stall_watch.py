"""StallWatch: a consumer behind its topic that receives nothing is reported once per stall."""

from stream_jobs.stall_watch import StallWatch


def test_checks_lag_only_on_empty_polls_every_interval() -> None:
    watch = StallWatch(started_at=0.0, stall_after_s=60, check_every_s=5)
    assert not watch.polled(3.0, received=0)  # too soon
    assert watch.polled(5.0, received=0)
    assert not watch.polled(6.0, received=0)
    assert not watch.polled(20.0, received=7)  # records flowing: nothing to check


def test_reports_a_stall_once_and_clears_when_caught_up() -> None:
    watch = StallWatch(started_at=0.0, stall_after_s=60, check_every_s=5)
    assert watch.lag_is(30.0, lag=12) == (30.0, False)  # behind, but not for long enough
    assert watch.lag_is(60.0, lag=12) == (60.0, True)  # reported exactly once
    assert watch.lag_is(65.0, lag=15) == (65.0, False)
    assert watch.lag_is(70.0, lag=0) == (0.0, False)  # caught up: the next stall counts afresh
    assert watch.lag_is(100.0, lag=3) == (30.0, False)
    assert watch.lag_is(130.0, lag=3) == (60.0, True)


def test_a_record_restarts_the_stall_clock() -> None:
    watch = StallWatch(started_at=0.0, stall_after_s=60, check_every_s=5)
    watch.polled(50.0, received=1)
    assert watch.lag_is(100.0, lag=4) == (50.0, False)
    assert watch.lag_is(110.0, lag=4) == (60.0, True)
