#!/usr/bin/env python3
"""Images per second of PyTorch's DataLoader on an image folder.

    python3 -m venv ~/.cache/tspipe/pytorch-venv
    ~/.cache/tspipe/pytorch-venv/bin/pip install torch==2.11.0 torchvision==0.26.0 \
        safetensors numpy
    ~/.cache/tspipe/pytorch-venv/bin/python tools/torch_loader_bench.py ROOT \
        --mode train|byol|eval [--image_size 224] [--batch_size 64] [--workers 2] \
        [--batches 40] [--warmup 5] [--threads 1]

The baseline for tspipe's C++ loader: a torchvision ImageFolder(ROOT) with
the transforms a user would write (torchvision.transforms on PIL images, as
the reference ImageNet and BYOL code does), read by a DataLoader with
shuffle, drop_last, persistent workers and no pinned memory, seeded with
torch.manual_seed(0). ROOT is a tree such as tools/make_image_folder.py
writes (ROOT/<class>/<file>).

Modes:
  train  RandomResizedCrop(scale 0.08-1, ratio 3/4-4/3), RandomHorizontalFlip,
         ToTensor, Normalize (ImageNet mean/std).
  byol   two views of every image, BYOL's augmentations: RandomResizedCrop
         (scale 0.08-1), RandomHorizontalFlip, ColorJitter(0.4, 0.4, 0.2, 0.1)
         with p 0.8, RandomGrayscale p 0.2, GaussianBlur(sigma 0.1-2) with
         p 1.0 / 0.1, RandomSolarize(128) with p 0.0 / 0.2, ToTensor,
         Normalize. BYOL's blur kernel is 23 at 224, about 10% of the side,
         so here it is int(0.1 * image_size), plus one when that is even
         (at least 3).
  eval   Resize(int(image_size / 0.875)) (shorter side), CenterCrop,
         ToTensor, Normalize.

Times --batches batches after --warmup batches (the warm-up absorbs worker
start-up and the first prefetches); when the folder runs out, a new epoch
starts on the same persistent workers. Every image counts once, even in
byol mode where it yields two views. Prints exactly one line on stdout:
  torch_loader mode=<mode> workers=<w> batch_size=<b> image_size=<s> images_per_second=<x.x>
Progress goes to stderr.
"""
import argparse
import sys
import time

import torch
import torchvision
from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def blur_kernel(image_size):
    """BYOL's 23 at 224: 10% of the side, made odd (and at least 3)."""
    k = int(image_size * 0.1)
    if k % 2 == 0:
        k += 1
    return max(k, 3)


def byol_view(image_size, blur_p, solarize_p):
    """One of BYOL's two view augmentations (they differ in blur and solarize)."""
    return T.Compose([
        T.RandomResizedCrop(image_size, scale=(0.08, 1.0)),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.RandomApply([T.GaussianBlur(blur_kernel(image_size), sigma=(0.1, 2.0))], p=blur_p),
        T.RandomSolarize(threshold=128, p=solarize_p),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


class TwoViews:
    """Returns both views of an image; default_collate makes them two tensors.

    A module-level class rather than a lambda so that the transform pickles
    when workers are started by spawn or forkserver.
    """

    def __init__(self, first, second):
        self.first = first
        self.second = second

    def __call__(self, img):
        return self.first(img), self.second(img)


def make_transform(mode, image_size):
    if mode == "train":
        return T.Compose([
            T.RandomResizedCrop(image_size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ])
    if mode == "byol":
        return TwoViews(byol_view(image_size, blur_p=1.0, solarize_p=0.0),
                        byol_view(image_size, blur_p=0.1, solarize_p=0.2))
    return T.Compose([
        T.Resize(int(image_size / 0.875)),
        T.CenterCrop(image_size),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def endless(loader):
    """Yields batches forever, starting a new epoch when one ends."""
    epoch = 0
    while True:
        for batch in loader:
            yield batch
        epoch += 1
        print(f"torch_loader_bench: epoch {epoch} done, starting another", file=sys.stderr)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="ImageFolder root (ROOT/<class>/<image>)")
    parser.add_argument("--mode", choices=("train", "byol", "eval"), required=True)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=40, help="batches timed")
    parser.add_argument("--warmup", type=int, default=5, help="batches before timing")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads in the main process")
    args = parser.parse_args(argv)
    if args.batches < 1 or args.warmup < 0 or args.batch_size < 1 or args.workers < 0:
        parser.error("need --batches >= 1, --warmup >= 0, --batch_size >= 1, --workers >= 0")

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    dataset = torchvision.datasets.ImageFolder(args.root,
                                               transform=make_transform(args.mode,
                                                                        args.image_size))
    if len(dataset) < args.batch_size:
        parser.error(f"{args.root} has {len(dataset)} images, fewer than one batch")
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, shuffle=True, drop_last=True,
        num_workers=args.workers, persistent_workers=args.workers > 0, pin_memory=False)
    print(f"torch_loader_bench: {len(dataset)} images in {len(dataset.classes)} classes, "
          f"{len(loader)} batches an epoch", file=sys.stderr)

    batches = endless(loader)
    start = time.perf_counter()
    for _ in range(args.warmup):
        next(batches)
    timed = time.perf_counter()
    print(f"torch_loader_bench: warm-up of {args.warmup} batches took {timed - start:.2f} s",
          file=sys.stderr)
    images = 0
    for _ in range(args.batches):
        inputs, labels = next(batches)
        # Count labels, not tensors: in byol mode `inputs` is a pair of views
        # of the same images, and an image counts once.
        images += labels.shape[0]
    seconds = time.perf_counter() - timed
    print(f"torch_loader mode={args.mode} workers={args.workers} batch_size={args.batch_size} "
          f"image_size={args.image_size} images_per_second={images / seconds:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
