"""Where entries are kept: each worker's hot tier, the node tier (LMDB), Redis, stacked in `Tiers`;
fill locks and the purge bus."""
