"""Bridges to other pruning toolkits. Each is imported on demand (`import
tf_lottery.interop.tfmot`) and never by the rest of tf_lottery."""
