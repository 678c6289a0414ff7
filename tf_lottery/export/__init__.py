"""Ship tickets: a SavedModel (and .keras / TFLite) of the plain network, the ticket file, and
`thin` (channel-pruned layers physically smaller)."""
import os

from tf_lottery import workdir as workdir_lib
from tf_lottery.export.plain import network_of, to_plain_model
from tf_lottery.export.saved_model import export_keras, export_saved_model, export_tflite
from tf_lottery.export.thin import thin
from tf_lottery.export.ticket_file import (load_ticket, read_ticket_header, read_ticket_masks,
                                           save_ticket)

SAVED_MODEL_DIR = "saved_model"
TICKET_FILE = "ticket.npz"


def export_ticket(model, directory, metadata=None, strong=False, seed=None, weights=None):
    """Write directory/saved_model (the trained ticket, masks folded, ghosts removed) and
    directory/ticket.npz (masks, architecture, and the weights or — strong — the seed).

    Args:
      model: a masked network or a SparseModel.
      directory: where saved_model/ and ticket.npz go.
      metadata, strong, seed, weights: as for `save_ticket`.
    Returns: {'saved_model': path, 'ticket': path}.
    """
    saved_model = os.path.join(directory, SAVED_MODEL_DIR)
    with workdir_lib.io_errors(saved_model), workdir_lib.atomic_folder(saved_model) as tmp:
        export_saved_model(model, tmp)
    ticket = save_ticket(model, os.path.join(directory, TICKET_FILE), metadata=metadata,
                         strong=strong, seed=seed, weights=weights)
    return {"saved_model": saved_model, "ticket": ticket}


__all__ = ["export_keras", "export_saved_model", "export_ticket", "export_tflite",
           "load_ticket", "network_of", "read_ticket_header", "read_ticket_masks",
           "save_ticket", "thin", "to_plain_model", "SAVED_MODEL_DIR", "TICKET_FILE"]
