"""Task-specific code (what differs between classification and detection)."""
