"""The caching rules as a pure core (RFC 9111): stored entries, freshness, keys, the flow's
decisions, answers built from entries. No sockets, no awaits."""
