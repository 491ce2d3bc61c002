"""Tools built above the router: compare, layerwise, reduce, bench, lint, the capability report,
probe-ops."""
