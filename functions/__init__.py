"""Lambda entry points: thin adapters over the core package."""
