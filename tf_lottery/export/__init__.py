"""Ship tickets: a SavedModel (and .keras / TFLite) of the plain network, the ticket file, and
the sizes of what was written."""
import json
import os

from tf_lottery import workdir as workdir_lib
from tf_lottery.export.plain import network_of, to_plain_model
from tf_lottery.export.saved_model import export_keras, export_saved_model, export_tflite
from tf_lottery.export.sizes import export_sizes, weights_sizes
from tf_lottery.export.ticket_file import (load_ticket, read_ticket_header, read_ticket_masks,
                                           save_ticket)

SAVED_MODEL_DIR = "saved_model"
TICKET_FILE = "ticket.npz"
SIZES_FILE = "export_sizes.json"


def export_ticket(model, directory, metadata=None, strong=False, seed=None, weights=None):
    """Write directory/saved_model (the trained ticket, masks folded, ghosts removed),
    directory/ticket.npz (masks, architecture, and the weights or — strong — the seed) and
    directory/export_sizes.json, the on-disk size of each ({'saved_model': {'bytes',
    'gzip_bytes'}, 'ticket': {...}}, as `export_sizes` measures them).

    Args:
      model: a masked network or a SparseModel.
      directory: where saved_model/, ticket.npz and export_sizes.json go.
      metadata, strong, seed, weights: as for `save_ticket`.
    Returns: {'saved_model': path, 'ticket': path, 'sizes': the content of export_sizes.json}.
    """
    saved_model = os.path.join(directory, SAVED_MODEL_DIR)
    with workdir_lib.io_errors(saved_model), workdir_lib.atomic_folder(saved_model) as tmp:
        export_saved_model(model, tmp)
    ticket = save_ticket(model, os.path.join(directory, TICKET_FILE), metadata=metadata,
                         strong=strong, seed=seed, weights=weights)
    sizes = {"saved_model": export_sizes(saved_model), "ticket": export_sizes(ticket)}
    with workdir_lib.atomic_write(os.path.join(directory, SIZES_FILE)) as f:
        json.dump(sizes, f, indent=2, sort_keys=True)
    return {"saved_model": saved_model, "ticket": ticket, "sizes": sizes}


__all__ = ["export_keras", "export_saved_model", "export_sizes", "export_ticket",
           "export_tflite", "load_ticket", "network_of", "read_ticket_header",
           "read_ticket_masks", "save_ticket", "to_plain_model", "weights_sizes",
           "SAVED_MODEL_DIR", "SIZES_FILE", "TICKET_FILE"]
