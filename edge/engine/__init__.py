"""A request's states (recv, lookup, hit, miss, pass, deliver) carried out, with the fast paths in
front and the delivery hooks (compression, slices, hints)."""
