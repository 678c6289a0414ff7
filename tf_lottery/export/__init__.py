"""Ship tickets: a SavedModel (and .keras / TFLite) of the plain network, the ticket file, and
the sizes of what was written, and `thin` (channel-pruned layers physically smaller)."""
import json
import os

from absl import logging

from tf_lottery import workdir as workdir_lib
from tf_lottery.errors import ConfigError
from tf_lottery.export.plain import network_of, to_plain_model
from tf_lottery.export.saved_model import export_keras, export_saved_model, export_tflite
from tf_lottery.export.sizes import export_sizes, weights_sizes
from tf_lottery.export.thin import thin
from tf_lottery.export.ticket_file import (load_ticket, read_ticket_header, read_ticket_masks,
                                           save_ticket)

SAVED_MODEL_DIR = "saved_model"
THIN_SAVED_MODEL_DIR = "thin_saved_model"
TICKET_FILE = "ticket.npz"
SIZES_FILE = "export_sizes.json"


def export_ticket(model, directory, metadata=None, strong=False, seed=None, weights=None):
    """Write directory/saved_model (the trained ticket, masks folded, ghosts removed),
    directory/ticket.npz (masks, architecture, and the weights or — strong — the seed) and
    directory/export_sizes.json, the on-disk size of each ({'saved_model': {'bytes',
    'gzip_bytes'}, 'ticket': {...}}, as `export_sizes` measures them); a ticket in which some
    channels are read by no layer (channel pruning; or unstructured masks that left a unit
    unread) also gets directory/thin_saved_model, the SavedModel of `thin(model)` (those
    channels physically removed; same outputs).

    Args:
      model: a masked network or a SparseModel.
      directory: where saved_model/, ticket.npz and export_sizes.json go.
      metadata, strong, seed, weights: as for `save_ticket`.
    Returns: {'saved_model': path, 'ticket': path, 'sizes': the content of export_sizes.json},
      and 'thin_saved_model': path where one was written.
    """
    saved_model = os.path.join(directory, SAVED_MODEL_DIR)
    with workdir_lib.io_errors(saved_model), workdir_lib.atomic_folder(saved_model) as tmp:
        export_saved_model(model, tmp)
    ticket = save_ticket(model, os.path.join(directory, TICKET_FILE), metadata=metadata,
                         strong=strong, seed=seed, weights=weights)
    written = {"saved_model": saved_model, "ticket": ticket}
    try:
        thinned = thin(model)
    except ConfigError:  # no pruned channel (or a graph thin does not handle): nothing to add
        thinned = None
    except Exception as e:  # noqa: BLE001 (an extra artifact must not fail the export)
        logging.warning("thin_saved_model not written: thinning failed (%s: %s)",
                        type(e).__name__, e)
        thinned = None
    if thinned is not None:
        path = os.path.join(directory, THIN_SAVED_MODEL_DIR)
        with workdir_lib.io_errors(path), workdir_lib.atomic_folder(path) as tmp:
            export_saved_model(thinned, tmp)
        written["thin_saved_model"] = path
    sizes = {name: export_sizes(path) for name, path in written.items()}
    with workdir_lib.atomic_write(os.path.join(directory, SIZES_FILE)) as f:
        json.dump(sizes, f, indent=2, sort_keys=True)
    return {**written, "sizes": sizes}


__all__ = ["export_keras", "export_saved_model", "export_sizes", "export_ticket",
           "export_tflite", "load_ticket", "network_of", "read_ticket_header",
           "read_ticket_masks", "save_ticket", "thin", "to_plain_model", "weights_sizes",
           "SAVED_MODEL_DIR", "THIN_SAVED_MODEL_DIR", "TICKET_FILE"]
