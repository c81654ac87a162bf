"""The Loam daemon: assembly, CLI, settings, storage."""
