"""Training: SparseModel, recipes, resumable fitting, strategies, schedules and the callback that
applies them, losses, ghost insertion, LRsI."""
from tf_lottery.training.callbacks import LEARNING_RATE, ScheduleCallback, bind_ghost_schedules
from tf_lottery.training.ghost_insertion import insert_ghosts, is_plain_relu, remove_ghosts
from tf_lottery.training.losses import (Distillation, LabelSmoothingCrossEntropy,
                                        distillation_loss, label_smoothing_cross_entropy,
                                        make_loss)
from tf_lottery.training.lrsi import layerwise_rescaled_init, one_step_losses, rescalable_layers
from tf_lottery.training.recipe import TrainingRecipe
from tf_lottery.training.repulsion import (REPULSION, RepulsionLoss, repulsion_loss,
                                           squared_cosines)
from tf_lottery.training.schedules import GhostAlphaSchedule, GhostBetaSchedule, Schedule
from tf_lottery.training.sparse_model import SparseModel

__all__ = ["LEARNING_RATE", "ScheduleCallback", "bind_ghost_schedules", "insert_ghosts",
           "is_plain_relu", "remove_ghosts", "Distillation", "LabelSmoothingCrossEntropy",
           "distillation_loss", "label_smoothing_cross_entropy", "make_loss",
           "layerwise_rescaled_init", "one_step_losses", "rescalable_layers",
           "GhostAlphaSchedule", "GhostBetaSchedule", "Schedule", "SparseModel", "TrainingRecipe",
           "REPULSION", "RepulsionLoss", "repulsion_loss", "squared_cosines"]
