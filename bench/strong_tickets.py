"""Benchmark (not a test): do the searches really find strong tickets on real Fashion-MNIST?

For each seed, with the main job's conv net whose weights are never trained:
  * EP        edge-popup at each remaining ratio, from fresh scores (Table 3 row "EP")
  * hard iEP  learning-rate rewinding (LR), each cycle inside the previous ticket
  * soft iEP  the paper's default (inherit scores, rewind LR, whole search space)
  * hard iEP (FT) and soft iEP (FT): fine-tuning, cycle i > 1 goes on at the rate cycle 1 last
    applied (γ*_{i-1}, constant), Table 3's FT rows
and a dense baseline: the same net with its weights trained (Adam 1e-3, cosine).

Prints test accuracy and dying ratio per remaining ratio as mean ± std over seeds (markdown), and
writes the raw numbers to --out. Every number is measured by this run.

    .venv/bin/python bench/strong_tickets.py --seeds 0 1 2 --epochs 2
    .venv/bin/python bench/strong_tickets.py --quick     # a 1-minute smoke run
"""
import argparse
import json
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from tf_lottery.data import load_dataset  # noqa: E402
from tf_lottery.experiment import Experiment  # noqa: E402
from tf_lottery.layers import FixedMask  # noqa: E402
from tf_lottery.models import build_model  # noqa: E402
from tf_lottery.search.edge_popup import EdgePopupSearch  # noqa: E402
from tf_lottery.training.fitting import fit_round  # noqa: E402
from tf_lottery.training.recipe import TrainingRecipe  # noqa: E402
from tf_lottery.training.sparse_model import SparseModel  # noqa: E402

METHODS = {"EP": "ep", "hard iEP (LR)": "hard_lr", "soft iEP": "soft_lr",
           "hard iEP (FT)": "hard_ft", "soft iEP (FT)": "soft_ft"}
NET = dict(name="conv4", plan=[32, "pool", 64, "pool"], dense_units=[128], use_bias=False)


def model_fn(**kwargs):
    return build_model(**{**NET, **kwargs})


def recipe(epochs):
    # the paper's SGD: weight decay 1e-4 as torch.optim.SGD applies it (coupled, on the scores),
    # cosine stepped once per epoch as the reference code's scheduler
    return TrainingRecipe(optimizer="sgd", learning_rate=0.1, momentum=0.9, weight_decay=1e-4,
                          weight_decay_mode="coupled", epochs=epochs, lr_schedule="cosine",
                          lr_update="epoch")


def run_search(variant, schedule, seed, epochs, data, workdir):
    search = EdgePopupSearch(variant=variant, remaining_schedule=schedule, recipe=recipe(epochs))
    experiment = Experiment(workdir=workdir, search=search, model_fn=model_fn, seed=seed,
                            dataset=data, verbose=0, tensorboard=False)
    return [{"remaining": r["remaining_fraction"], "accuracy": r["test_accuracy"],
             "dying_ratio": r["dying_ratio"]} for r in experiment.run()]


def run_dense(seed, epochs, data, workdir):
    import keras

    keras.utils.set_random_seed(seed)
    network = model_fn(input_shape=data.info.input_shape, num_classes=data.info.num_classes,
                       mask_rule=FixedMask())
    model = SparseModel(network)
    # weights are trained here: Adam 1e-3 (SGD 0.1, right for scores, makes this BN-free net diverge)
    r = TrainingRecipe(optimizer="adam", learning_rate=1e-3, weight_decay=0, epochs=epochs,
                       lr_schedule="cosine")
    fit_round(model, data, r.make_optimizer(data.steps_per_epoch), r.make_loss(), epochs,
              workdir, verbose=0, validate=False)
    return model.evaluate(data.test, verbose=0, return_dict=True)["accuracy"]


def mean_std(values):
    return f"{100 * np.mean(values):.2f} ± {100 * np.std(values):.2f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=2, help="epochs per cycle")
    parser.add_argument("--schedule", type=float, nargs="+", default=[0.5, 0.3, 0.1, 0.05],
                        help="remaining fraction after each cycle")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS),
                        metavar="METHOD", help=f"a subset of {list(METHODS)}")
    parser.add_argument("--no-dense", action="store_true", help="skip the dense baseline")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (1 seed, 1k images)")
    parser.add_argument("--out", default="bench_strong_tickets.json")
    args = parser.parse_args()
    train_examples = 1024 if args.quick else None
    seeds = args.seeds[:1] if args.quick else args.seeds
    epochs = 1 if args.quick else args.epochs

    methods = {name: METHODS[name] for name in args.methods}
    results = {name: [] for name in methods}
    dense = []
    start = time.time()
    for seed in seeds:
        data = load_dataset("fashion_mnist", batch_size=128, seed=seed,
                            train_examples=train_examples)
        for name, variant in methods.items():
            with tempfile.TemporaryDirectory() as workdir:
                rows = run_search(variant, args.schedule, seed, epochs, data, workdir)
            results[name].append(rows)
            print(f"seed {seed} {name}: " + ", ".join(
                f"{r['remaining']:.3f}: {r['accuracy']:.4f} (dying {r['dying_ratio']:.3f})"
                for r in rows), flush=True)
        if args.no_dense:
            continue
        with tempfile.TemporaryDirectory() as workdir:
            dense.append(run_dense(seed, epochs * len(args.schedule), data, workdir))
        print(f"seed {seed} dense: {dense[-1]:.4f}", flush=True)

    header = "| method | " + " | ".join(f"{r:.0%} remaining" for r in args.schedule) + " |"
    lines = [header, "|---" * (len(args.schedule) + 1) + "|"]
    for name in methods:
        cells = [mean_std([seed_rows[i]["accuracy"] for seed_rows in results[name]])
                 for i in range(len(args.schedule))]
        lines.append(f"| {name} test accuracy (%) | " + " | ".join(cells) + " |")
    for name in methods:
        cells = [mean_std([seed_rows[i]["dying_ratio"] for seed_rows in results[name]])
                 for i in range(len(args.schedule))]
        lines.append(f"| {name} dying ratio (%) | " + " | ".join(cells) + " |")
    if dense:
        lines.append(f"| dense, weights trained (Adam, {epochs * len(args.schedule)} epochs) | "
                     f"{mean_std(dense)} |" + " |" * (len(args.schedule) - 1))
    table = "\n".join(lines)
    print(f"\nseeds {seeds}, {epochs} epochs per cycle, batch 128, SGD 0.1 cosine, "
          f"(per epoch), momentum 0.9, coupled (PyTorch) weight decay 1e-4, "
          f"{data.info.num_train_examples} training images, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{time.time() - start:.0f} s\n")
    print(table)
    with open(args.out, "w") as f:
        json.dump({"seeds": seeds, "epochs": epochs, "schedule": args.schedule,
                   "results": results, "dense": dense, "table": table}, f, indent=2)


if __name__ == "__main__":
    main()
