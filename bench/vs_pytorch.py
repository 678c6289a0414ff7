"""Benchmark (not a test): tf_lottery's training steps against minimal PyTorch steps.

For Conv-6 and ResNet-20 on 32x32x3 inputs (batch 128), three lottery-ticket steps, each in
tf_lottery (zoo model, SparseModel, SGD with momentum) and in a small PyTorch implementation
written here after the papers' reference code:

  IMP  fixed mask (Frankle & Carbin; open_lth applies the mask to the weights in place before
       every forward pass); weights trained
  EP   edge-popup (Ramanujan et al.): GetSubnet keeps the top half of scores.abs() by sorting,
       straight-through gradient; weights and batch-norm affine parameters frozen
  CS   continuous sparsification (Savarese et al.): mask sigmoid(beta*s) on every weight,
       loss + lambda * sum of the masks computed in the forward pass; weights and s trained

plus `dense`, the same network without masks in both frameworks (how far apart the frameworks
are before any mask). Prints each framework's masked step over its own dense step (what the
mask machinery costs there) and tf_lottery time / PyTorch time per step (goal <= 1.0); both
frameworks get the same intra-op and inter-op thread counts and are timed in interleaved rounds.

PyTorch is needed for this benchmark only (pip install torch); it is no dependency of
tf_lottery. PyTorch's OpenMP threads spin while they wait by default, which on a machine shared
with other work makes a 2-thread convolution ten times slower; --omp-wait-policy passive (the
default here) avoids that; on a dedicated machine also try `active`. TensorFlow does not use
OpenMP, so the setting affects PyTorch only.

    python bench/vs_pytorch.py            # full run
    python bench/vs_pytorch.py --quick    # a smoke run of under two minutes
"""
import argparse
import os
import time

import _harness  # noqa: F401  (sets sys.path and TF logging first)
from _harness import add_common_arguments, configure, print_settings, table, time_interleaved
from _variants import build_variant, random_batch

from tf_lottery.training.recipe import TrainingRecipe

METHODS = {"dense": "plain", "IMP": "fixed", "EP": "topk", "CS": "sigmoid_l1"}
KEEP_FRACTION = 0.5  # EP's top-k
CS_BETA = 1.0
INPUT_SHAPE = (32, 32, 3)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["conv6", "resnet20"],
                        choices=["conv6", "resnet20"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--omp-wait-policy", choices=["passive", "active", "unset"],
                        default="passive", help="OMP_WAIT_POLICY for PyTorch's OpenMP threads")
    parser.add_argument("--channels-last", action="store_true",
                        help="PyTorch tensors in channels-last (NHWC) memory format, often "
                             "faster on CPUs; the reference code uses the default NCHW")
    add_common_arguments(parser)
    args = parser.parse_args()
    if args.quick:
        args.models, args.batch, args.warmup = ["resnet20"], 32, 1
    return args


# --- PyTorch: minimal reference-style implementations ---------------------------------------

def torch_library(args):
    """The PyTorch modules, defined once torch is imported (after OMP_WAIT_POLICY is set)."""
    if args.omp_wait_policy != "unset":
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
    import torch
    from torch import nn
    from torch.nn import functional as F

    class GetSubnet(torch.autograd.Function):
        """Edge-popup's top-k: ones at the largest keep_fraction of the scores (by sorting);
        the gradient passes straight through."""

        @staticmethod
        def forward(ctx, scores, keep_fraction):
            # flatten() follows the logical (N, C, H, W) order whatever the memory format, so
            # the flat 0/1 vector reshaped to scores' shape lines up with it; view(-1) would
            # fail on a channels-last tensor, and writing into scores.flatten() (the reference
            # code's clone) would write into a copy there
            _, order = scores.flatten().sort()
            dropped = int((1 - keep_fraction) * scores.numel())
            out = torch.zeros(scores.numel(), dtype=scores.dtype, device=scores.device)
            out[order[dropped:]] = 1.0
            return out.reshape(scores.shape)

        @staticmethod
        def backward(ctx, grad):
            return grad, None

    class Masking:
        """Adds a method's mask to a Conv2d/Linear: 'plain', 'fixed', 'topk' or 'sigmoid'."""

        def setup_mask(self, method):
            self.method = method
            if method == "fixed":
                self.register_buffer("mask", torch.ones_like(self.weight))
            elif method == "topk":
                self.scores = nn.Parameter(torch.empty_like(self.weight))
                nn.init.kaiming_uniform_(self.scores, a=5 ** 0.5)
                self.weight.requires_grad_(False)
                if self.bias is not None:
                    self.bias.requires_grad_(False)
            elif method == "sigmoid":
                self.scores = nn.Parameter(torch.zeros_like(self.weight))
                self.soft_mask = None

        def masked_weight(self):
            if self.method == "topk":
                return self.weight * GetSubnet.apply(self.scores.abs(), KEEP_FRACTION)
            if self.method == "sigmoid":
                self.soft_mask = torch.sigmoid(CS_BETA * self.scores)  # kept for the L1 term
                return self.weight * self.soft_mask
            return self.weight  # plain; fixed: masked in place before the forward pass

    class Conv(nn.Conv2d, Masking):
        def __init__(self, method, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.setup_mask(method)

        def forward(self, x):
            return self._conv_forward(x, self.masked_weight(), self.bias)

    class Linear(nn.Linear, Masking):
        def __init__(self, method, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.setup_mask(method)

        def forward(self, x):
            return F.linear(x, self.masked_weight(), self.bias)

    def batch_norm(method, channels):
        bn = nn.BatchNorm2d(channels)
        if method == "topk":  # frozen like the weights (tf_lottery's freeze_weights)
            bn.weight.requires_grad_(False)
            bn.bias.requires_grad_(False)
        return bn

    class Conv6(nn.Module):
        """Conv-6 as tf_lottery's zoo: 3x3 ReLU conv pairs with bias, max pooling, FC 256-256."""

        def __init__(self, method):
            super().__init__()
            layers, channels = [], 3
            for spec in [64, 64, "pool", 128, 128, "pool", 256, 256, "pool"]:
                if spec == "pool":
                    layers.append(nn.MaxPool2d(2))
                else:
                    layers += [Conv(method, channels, spec, 3, padding=1), nn.ReLU()]
                    channels = spec
            self.features = nn.Sequential(*layers)
            self.classifier = nn.Sequential(
                Linear(method, 256 * 4 * 4, 256), nn.ReLU(), Linear(method, 256, 256), nn.ReLU(),
                Linear(method, 256, 10))

        def forward(self, x):
            return self.classifier(torch.flatten(self.features(x), 1))

    class Block(nn.Module):
        def __init__(self, method, channels, filters, stride):
            super().__init__()
            self.conv1 = Conv(method, channels, filters, 3, stride, 1, bias=False)
            self.bn1 = batch_norm(method, filters)
            self.conv2 = Conv(method, filters, filters, 3, 1, 1, bias=False)
            self.bn2 = batch_norm(method, filters)
            self.shortcut = nn.Sequential()
            if stride != 1 or channels != filters:  # 1x1 projection (option B), as the zoo
                self.shortcut = nn.Sequential(
                    Conv(method, channels, filters, 1, stride, bias=False),
                    batch_norm(method, filters))

        def forward(self, x):
            y = F.relu(self.bn1(self.conv1(x)))
            return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))

    class ResNet20(nn.Module):
        """CIFAR ResNet-20 as tf_lottery's zoo (He et al. 2016, Sec. 4.2)."""

        def __init__(self, method, width=16, blocks=3):
            super().__init__()
            self.conv1 = Conv(method, 3, width, 3, 1, 1, bias=False)
            self.bn1 = batch_norm(method, width)
            layers, channels = [], width
            for stage, filters in enumerate([width, 2 * width, 4 * width]):
                for index in range(blocks):
                    stride = 2 if stage > 0 and index == 0 else 1
                    layers.append(Block(method, channels, filters, stride))
                    channels = filters
            self.stages = nn.Sequential(*layers)
            self.fc = Linear(method, channels, 10)

        def forward(self, x):
            x = self.stages(F.relu(self.bn1(self.conv1(x))))
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    return torch, {"conv6": Conv6, "resnet20": ResNet20}, Masking


def torch_step(torch, network_class, masking, method, batch, device, channels_last):
    """One synchronous PyTorch training step of `method` ('plain', 'fixed', ...)."""
    from torch.nn import functional as F

    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = network_class(method).to(device, memory_format=memory_format).train()
    masked = [m for m in model.modules() if isinstance(m, masking)]
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1,
                                momentum=0.9)
    x = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=memory_format)
    y = torch.randint(0, 10, (batch,), device=device)

    def step():
        if method == "fixed":  # open_lth: weights masked in place before each forward pass
            with torch.no_grad():
                for module in masked:
                    module.weight.mul_(module.mask)
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        if method == "sigmoid":
            loss = loss + 1e-8 * sum(module.soft_mask.sum() for module in masked)
        loss.backward()
        optimizer.step()
        return loss.item()  # waits for the step
    return step


def main():
    args = parse_args()
    configure(args)
    torch, networks, masking = torch_library(args)
    _harness.torch_threads(torch, args)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    jit_compile = TrainingRecipe(jit_compile="auto").jit_compile  # tf_lottery's own choice
    print_settings("tf_lottery vs PyTorch per training step", args, batch=args.batch,
                   models=", ".join(args.models), input_shape=INPUT_SHAPE,
                   tf_xla=f"{jit_compile} (TrainingRecipe's 'auto': XLA only on GPU/TPU)",
                   torch_device=device, omp_wait_policy=os.environ.get("OMP_WAIT_POLICY", "unset"),
                   torch_memory_format="channels-last (NHWC)" if args.channels_last else "NCHW",
                   optimizer="SGD(0.1, momentum=0.9) in both",
                   ep_keep_fraction=KEEP_FRACTION, cs="beta 1, lambda 1e-8")
    rows = []
    for model_name in args.models:
        x, y = random_batch(args.batch, INPUT_SHAPE)
        steps, first = {}, {}
        for method, variant in METHODS.items():
            model = build_variant(model_name, variant, INPUT_SHAPE, jit_compile)
            start = time.perf_counter()
            model.train_on_batch(x, y)
            first["tf", method] = time.perf_counter() - start
            steps["tf", method] = lambda model=model: model.train_on_batch(x, y)
            rule = "plain" if variant == "plain" else variant.replace("_l1", "")
            steps["torch", method] = torch_step(torch, networks[model_name], masking, rule,
                                                args.batch, device, args.channels_last)
        timings = time_interleaved(steps, args)
        tf_dense, torch_dense = timings["tf", "dense"], timings["torch", "dense"]
        for method in METHODS:
            tf_t, torch_t = timings["tf", method], timings["torch", method]
            wall = tf_t.median_wall() / torch_t.median_wall()
            rows.append([model_name, method, f"{1000 * tf_t.median_wall():.1f}",
                         f"{1000 * torch_t.median_wall():.1f}",
                         f"{tf_t.median_wall() / tf_dense.median_wall():.2f}",
                         f"{torch_t.median_wall() / torch_dense.median_wall():.2f}",
                         f"{wall:.2f}", f"{tf_t.median_cpu() / torch_t.median_cpu():.2f}",
                         "" if method == "dense" else ("met" if wall <= 1.0 else "MISSED")])
        print(table(rows[-len(METHODS):], HEADER), "\n", flush=True)
    print("## all results (goal: tf_lottery / PyTorch <= 1.0)\n")
    print(table(rows, HEADER))


HEADER = ["model", "method", "tf_lottery ms", "PyTorch ms", "tf x own dense", "torch x own dense",
          "tf/torch (wall)", "tf/torch (CPU)", "goal <= 1.0"]

if __name__ == "__main__":
    main()
