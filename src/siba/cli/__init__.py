"""The siba command line."""
