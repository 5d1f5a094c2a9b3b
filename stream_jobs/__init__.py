"""stream_jobs."""
