"""Ticket searches as procedures over rounds (see rounds.py for the structure on disk)."""
from tf_lottery.search.base import RoundSearch
from tf_lottery.search.edge_popup import EdgePopupSearch
from tf_lottery.search.tost import ToSTTraining

__all__ = ["RoundSearch", "EdgePopupSearch", "ToSTTraining"]
