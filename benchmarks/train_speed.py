#!/usr/bin/env python
"""Training speed: the original pipeline against the project's path, on this machine.

    python benchmarks/train_speed.py                 # all variants, ~5 minutes on 2 CPU cores
    python benchmarks/train_speed.py --steps 50 --models fc

For each variant, batch 64 and the report's optimiser, it times
* original: what the author's notebook did, rebuilt from SPEC.md: a Dataset that
  turns each image into a PIL image, then ToTensor and Normalize, through a
  DataLoader (2 workers, shuffled); fp32, NCHW; nn.Dropout; evaluation through a
  DataLoader of 64 with gradients tracked;
* project fp32 and project bf16: the whole data set as one normalised tensor in
  memory with index batching, channels_last, metrics kept on the device,
  evaluation under inference_mode in batches of 1000; bf16 autocast for the
  forward pass (parameters, gradients and loss in fp32).

It reports training images per second, seconds per epoch including one pass over
the 10,000 test images (extrapolated from timed steps), the speed-up over the
original, and the fraction of this machine's measured matrix-multiply peak that
the training reaches. A lever table then adds the project's optimisations one at
a time on one model. Results are printed and written to benchmarks/latest.md.
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

import helpers as H
from helpers.models import Dropout

HERE = Path(__file__).resolve().parent
TRAIN_EPOCH, TEST_EPOCH = 50_000, 10_000


def matmul_peak(dtype, sizes=(1024, 2048, 3072), trials=5) -> float:
    """The best matrix-multiply rate over a few sizes and trials: this machine's practical peak."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b
        for _ in range(trials):
            start = time.perf_counter()
            a @ b
            best = max(best, 2 * n ** 3 / (time.perf_counter() - start))
    return best


class PerImageDataset(torch.utils.data.Dataset):
    """The original pipeline: uint8 array -> PIL image -> ToTensor -> Normalize, one image at a time."""

    def __init__(self, split):
        from torchvision import transforms
        self.images = split.images.permute(0, 2, 3, 1).numpy()
        self.labels = split.labels.tolist()
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(H.data.MEAN, H.data.STD)])

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image
        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def original_model(name):
    model = H.build_model(name)
    for key, layer in model.named_children():
        if isinstance(layer, Dropout):
            setattr(model, key, nn.Dropout(layer.p))   # the author's dropout
    return model


def time_original(name, data, steps, warmup, eval_images):
    torch.manual_seed(0)
    model = original_model(name)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-6)
    loader = torch.utils.data.DataLoader(PerImageDataset(data.train), batch_size=64, shuffle=True, num_workers=2)
    it = iter(loader)
    model.train()
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        x, y = next(it)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()                                  # the usual running-loss print reads it every step
    train_ips = steps * 64 / (time.perf_counter() - start)
    test = H.balanced_subset(data.test, eval_images)
    loader = torch.utils.data.DataLoader(PerImageDataset(test), batch_size=64, num_workers=2)
    start = time.perf_counter()
    model.eval()
    for x, y in loader:                              # the author evaluated without torch.no_grad()
        F.cross_entropy(model(x), y).item()
    eval_ips = eval_images / (time.perf_counter() - start)
    return train_ips, eval_ips


def time_project(name, data, steps, warmup, eval_images, precision="bf16", channels_last=True, compile=False,
                 model_fn=H.build_model):
    torch.manual_seed(0)
    dev = torch.device("cpu")
    model = model_fn(name)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-6)
    x_all, y_all = H.data.to_device(H.balanced_subset(data.train, 10_000), dev, channels_last)
    step_model = torch.compile(model) if compile else model
    gen = torch.Generator().manual_seed(0)
    batches = H.data.batches(x_all, y_all, 64, gen)
    loss_sum = torch.zeros(())
    model.train()
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        try:
            xb, yb = next(batches)
        except StopIteration:
            batches = H.data.batches(x_all, y_all, 64, gen)
            xb, yb = next(batches)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = step_model(xb)
        loss = F.cross_entropy(logits.float(), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += loss.detach()
    loss_sum.item()
    train_ips = steps * 64 / (time.perf_counter() - start)
    x_test, y_test = H.data.to_device(H.balanced_subset(data.test, eval_images), dev, channels_last)
    start = time.perf_counter()
    H.evaluate(model, x_test, y_test, precision=precision)
    eval_ips = eval_images / (time.perf_counter() - start)
    return train_ips, eval_ips


def epoch_seconds(train_ips, eval_ips):
    return TRAIN_EPOCH / train_ips + TEST_EPOCH / eval_ips


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=list(H.VARIANTS))
    ap.add_argument("--steps", type=int, default=120, help="timed training steps per measurement")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--eval-images", type=int, default=2000)
    ap.add_argument("--no-levers", action="store_true", help="skip the one-lever-at-a-time table")
    ap.add_argument("--lever-model", default="avgpool_dropout", help="model for the lever table")
    ap.add_argument("--compile", action="store_true", help="also try torch.compile in the lever table")
    ap.add_argument("--out", type=Path, default=HERE / "latest.md")
    args = ap.parse_args(argv)

    data = H.load_cifar10(verbose=False)
    peak = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    machine = (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
               f"{torch.__version__}, bf16 native: {H.device.cpu_has_native_bf16()}; matmul peak measured: "
               f"fp32 {peak['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peak['bf16'] / 1e9:.0f} GFLOP/s")
    print(machine, flush=True)
    rows = []
    for name in args.models:
        train_flops = 3 * H.architecture.forward_flops(H.build_model(name))
        measured = {"original (fp32)": time_original(name, data, args.steps, args.warmup, args.eval_images),
                    "project fp32": time_project(name, data, args.steps, args.warmup, args.eval_images, "fp32"),
                    "project bf16": time_project(name, data, args.steps, args.warmup, args.eval_images, "bf16")}
        base = epoch_seconds(*measured["original (fp32)"])
        for path, (train_ips, eval_ips) in measured.items():
            prec = "bf16" if "bf16" in path else "fp32"
            rows.append({"model": name, "path": path, "train img/s": train_ips,
                         "s/epoch (train + test)": epoch_seconds(train_ips, eval_ips),
                         "speed-up": base / epoch_seconds(train_ips, eval_ips),
                         "train GFLOP/s": train_ips * train_flops / 1e9,
                         f"% of {prec} peak": 100 * train_ips * train_flops / peak[prec]})
            r = rows[-1]
            print(f"{name:16s} {path:16s} {train_ips:7.0f} img/s  {r['s/epoch (train + test)']:6.1f} s/epoch  "
                  f"x{r['speed-up']:.2f}  {r['train GFLOP/s']:5.0f} GFLOP/s = {r[f'% of {prec} peak']:4.0f}% of "
                  f"{prec} peak", flush=True)
    table = pd.DataFrame(rows)
    table["% of peak"] = table.pop("% of fp32 peak").fillna(table.pop("% of bf16 peak"))

    levers = None
    if not args.no_levers:
        name = args.lever_model
        steps = [("in-memory tensor, fp32, NCHW, nn.Dropout", dict(precision="fp32", channels_last=False,
                                                                  model_fn=original_model)),
                 ("+ bf16 autocast", dict(precision="bf16", channels_last=False, model_fn=original_model)),
                 ("+ channels_last", dict(precision="bf16", channels_last=True, model_fn=original_model)),
                 ("+ torch.rand dropout (the project's path)", dict(precision="bf16", channels_last=True))]
        if args.compile:
            steps.append(("+ torch.compile", dict(precision="bf16", channels_last=True, compile=True)))
        lever_rows = []
        for label, kw in steps:
            ips, eips = time_project(name, data, args.steps, args.warmup, args.eval_images, **kw)
            lever_rows.append({"model": name, "lever": label, "train img/s": ips,
                               "s/epoch (train + test)": epoch_seconds(ips, eips)})
            print(f"{label:45s} {ips:7.0f} img/s  {epoch_seconds(ips, eips):6.1f} s/epoch", flush=True)
        levers = pd.DataFrame(lever_rows)

    text = [f"# Training speed, {time.strftime('%Y-%m-%d')}", "", f"Machine: {machine}.", "",
            f"{args.steps} timed steps of batch 64 per measurement (after {args.warmup} warm-up steps); the test "
            f"pass timed on {args.eval_images} images; seconds per epoch extrapolated to 50,000 + 10,000 images.",
            "", H.results.markdown_table(table)]
    if levers is not None:
        text += ["", "One lever at a time (project path):", "", H.results.markdown_table(levers)]
    H.files.write_text(args.out, "\n".join(text) + "\n")
    if args.out == HERE / "latest.md":
        H.results.write_section(HERE / "README.md", "train-speed", "\n".join(text[2:]))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
