"""The embedded runtime's own messages."""
