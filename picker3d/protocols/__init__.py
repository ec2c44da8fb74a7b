"""Scipion protocols of picker3d (one per file, re-exported here)."""
