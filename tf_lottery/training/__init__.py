"""Training: SparseModel, recipes, resumable fitting, strategies."""
from tf_lottery.training.recipe import TrainingRecipe
from tf_lottery.training.sparse_model import SparseModel

__all__ = ["SparseModel", "TrainingRecipe"]
