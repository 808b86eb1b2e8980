"""The patching benchmark."""
