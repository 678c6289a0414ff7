"""Ship tickets: a SavedModel (and .keras / TFLite) of the plain network, and the ticket file."""
from tf_lottery.export.plain import network_of, to_plain_model
from tf_lottery.export.saved_model import export_keras, export_saved_model, export_tflite

__all__ = ["export_keras", "export_saved_model", "export_tflite", "network_of", "to_plain_model"]
