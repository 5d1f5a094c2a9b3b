"""Reference gateway: an OpenAI-compatible proxy that enforces budgets and publishes usage."""
