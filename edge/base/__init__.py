"""What every layer may use: the memory ledger, counters, task cancellation."""
