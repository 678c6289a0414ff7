"""Ticket searches as procedures over rounds (see rounds.py for the structure on disk)."""
