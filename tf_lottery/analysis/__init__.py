"""Measurements of models and rounds: sparsity, angular distance, linear mode connectivity, dying
ratio, Hessian top eigenvalue, activation sparsity, gradient flow, multiply-adds of the unpruned
weights (flops), and callbacks running them during training."""
from tf_lottery.analysis._common import kernel_arrays, weight_parameters
from tf_lottery.analysis.activations import (activation_sparsity, activation_zero_counts, is_relu,
                                             overall_activation_sparsity, zero_fraction,
                                             zero_fractions)
from tf_lottery.analysis.angular import (angle, angular_distance, angular_distance_matrix,
                                         network_state)
from tf_lottery.analysis.callbacks import (ActivationSparsityCallback, AnalysisCallback,
                                           DyingRatioCallback, GradientFlowCallback,
                                           HessianEigenvalueCallback)
from tf_lottery.analysis.connectivity import (classification_eval_fn, error_barrier, interpolate,
                                              linear_path_metrics, lmc_metrics,
                                              reset_batchnorm_statistics)
from tf_lottery.analysis.dying import (DyingRatioTracker, DyingStats, dying_ratio, dying_stats,
                                       model_dying_stats, reset_ever_selected)
from tf_lottery.analysis.flops import flops, flops_metrics
from tf_lottery.analysis.gradient_flow import gradient_flow, masked_gradients
from tf_lottery.analysis.hessian import (HessianEigenpair, hessian_top_eigenpair,
                                         hessian_top_eigenvalue, hessian_vector_product)
from tf_lottery.analysis.sparsity import (SparsityReport, model_sparsity, sparsity_report,
                                          weights_sparsity)

__all__ = [
    "kernel_arrays", "weight_parameters",
    "activation_sparsity", "activation_zero_counts", "is_relu", "overall_activation_sparsity",
    "zero_fraction", "zero_fractions",
    "angle", "angular_distance", "angular_distance_matrix", "network_state",
    "ActivationSparsityCallback", "AnalysisCallback", "DyingRatioCallback", "GradientFlowCallback",
    "HessianEigenvalueCallback",
    "classification_eval_fn", "error_barrier", "interpolate", "linear_path_metrics", "lmc_metrics",
    "reset_batchnorm_statistics",
    "DyingRatioTracker", "DyingStats", "dying_ratio", "dying_stats", "model_dying_stats",
    "reset_ever_selected",
    "flops", "flops_metrics",
    "gradient_flow", "masked_gradients",
    "HessianEigenpair", "hessian_top_eigenpair", "hessian_top_eigenvalue",
    "hessian_vector_product",
    "SparsityReport", "model_sparsity", "sparsity_report", "weights_sparsity",
]
