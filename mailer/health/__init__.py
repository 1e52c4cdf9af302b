"""How the daemon is: its status from the heartbeat, and the Prometheus metrics."""
