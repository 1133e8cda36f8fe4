"""models service."""
