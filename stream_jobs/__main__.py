"""``python -m stream_jobs worker``: run the Faust worker with every agent."""

from stream_jobs import pricing_agent, spend_agent  # noqa: F401 - registers the agents
from stream_jobs.app import app

app.main()
