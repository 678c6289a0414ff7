"""Command-line entries (bin/train, bin/report)."""
