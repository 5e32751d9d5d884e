"""What operators use: admin endpoints, metrics, the node view, reload, purge API."""
