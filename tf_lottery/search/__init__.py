"""Ticket searches as procedures over rounds (see rounds.py for the structure on disk)."""
from tf_lottery.search.base import RoundSearch
from tf_lottery.search.edge_popup import EdgePopupSearch
from tf_lottery.search.imp import IMPSearch
from tf_lottery.search.prune_at_init import PruneAtInitSearch

__all__ = ["RoundSearch", "EdgePopupSearch", "IMPSearch", "PruneAtInitSearch"]
