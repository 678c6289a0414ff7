"""Ticket searches as procedures over rounds (see rounds.py for the structure on disk).

`run(search, model, data, workdir)` runs one on your own Keras model from Python (runner.py);
bin/train runs one from gin files. Importing the package registers every search with gin."""
from tf_lottery.search.base import RoundSearch
from tf_lottery.search.continuous_sparsification import (
    ContinuousSparsificationSearch, IterativeStochasticSparsificationSearch)
from tf_lottery.search.dynamic_sparse import DynamicSparseSearch
from tf_lottery.search.edge_popup import EdgePopupSearch
from tf_lottery.search.evaluators import Control, Evaluator, LinearModeConnectivity
from tf_lottery.search.gmp import GradualMagnitudeSearch
from tf_lottery.search.imp import IMPSearch
from tf_lottery.search.prune_at_init import PruneAtInitSearch
from tf_lottery.search.rewind import assign_dense_weights, dense_weights
from tf_lottery.search.runner import SearchRun, run
from tf_lottery.search.ticket_evaluation import retrain_ticket
from tf_lottery.search.tost import ToSTSearch, ToSTTraining

__all__ = ["RoundSearch", "ContinuousSparsificationSearch", "DynamicSparseSearch",
           "IterativeStochasticSparsificationSearch", "EdgePopupSearch", "GradualMagnitudeSearch",
           "IMPSearch", "PruneAtInitSearch", "ToSTSearch", "ToSTTraining", "retrain_ticket",
           "assign_dense_weights", "dense_weights", "SearchRun", "run", "Evaluator", "Control",
           "LinearModeConnectivity"]
