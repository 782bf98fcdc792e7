"""The device admin console."""
