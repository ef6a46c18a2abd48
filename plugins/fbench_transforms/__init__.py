"""Built-in preprocessing transforms."""
