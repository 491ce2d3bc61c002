"""The plugin contract: what a backend plugin imports, and the registry that finds plugins."""
