"""Where unirt keeps what it has learned and built: the signed artifact cache and the one atomic
write."""
