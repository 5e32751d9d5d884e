"""The origin: its client, a fetch streamed to every waiting client, collapsing."""
