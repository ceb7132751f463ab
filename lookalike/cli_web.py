"""Commands that serve the web UI: serve, up."""
