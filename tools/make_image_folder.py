#!/usr/bin/env python3
"""Writes a torchvision ImageFolder tree from Debian's Fashion-MNIST files.

    sudo apt-get install dataset-fashion-mnist
    python3 -m venv ~/.cache/tspipe/pytorch-venv
    ~/.cache/tspipe/pytorch-venv/bin/pip install torch==2.11.0 torchvision==0.26.0 \
        safetensors numpy
    ~/.cache/tspipe/pytorch-venv/bin/python tools/make_image_folder.py OUT_DIR \
        [--train 3000] [--val 1000] [--size 224] [--quality 90] [--format jpg|png]

Only numpy and Pillow are needed (both come with the venv above); the IDX
files are parsed here rather than through torchvision.datasets so that the
tree depends on nothing but the Debian package's bytes.

Writes:
  OUT_DIR/train/<class>/<index>.<ext> for the first N training images and
  OUT_DIR/val/<class>/<index>.<ext> for the first M test images, <index>
  being the image's index in its split, zero-padded to 5 digits. The class
  folders are "0_tshirt_top" ... "9_ankle_boot": the digit prefix makes
  ImageFolder's sorted class order equal Fashion-MNIST's label order (when
  a split is so small that a class gets no image, that folder is not made,
  since ImageFolder refuses empty class folders, and a warning says so). Each
  image is the 28x28 grey image upscaled to size x size with PIL bilinear,
  made RGB (3 equal channels) and saved by PIL as JPEG (--quality) or PNG.
Prints one summary line (files, bytes, seconds).
"""
import argparse
import gzip
import os
import sys
import time

import numpy as np
from PIL import Image

DATA_DIR = "/usr/share/datasets/fashion-mnist"

CLASSES = ("0_tshirt_top", "1_trouser", "2_pullover", "3_dress", "4_coat", "5_sandal",
           "6_shirt", "7_sneaker", "8_bag", "9_ankle_boot")

# IDX type codes; Fashion-MNIST only uses unsigned bytes, the rest are here so
# that an unexpected file fails with a clear message rather than garbage.
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path):
    """Reads a gzipped IDX file into a numpy array of its declared shape.

    Args:
      path: the .gz file.

    Returns:
      The array (uint8 for Fashion-MNIST images and labels).
    """
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(IDX_DTYPES[data[2]])
    offset = 4 + 4 * ndim
    count = int(np.prod(dims))
    if len(data) - offset != count * dtype.itemsize:
        raise ValueError(f"{path}: {len(data) - offset} data bytes, header says "
                         f"{count * dtype.itemsize}")
    return np.frombuffer(data, dtype=dtype, offset=offset, count=count).reshape(dims)


def non_empty_dir(path):
    return os.path.isdir(path) and bool(os.listdir(path))


def write_split(out_dir, split, images, labels, count, size, fmt, quality):
    """Writes the first `count` images of a split; returns (files, bytes)."""
    # Only classes that get images get a folder: ImageFolder refuses a tree
    # with an empty class folder, so tiny splits stay loadable.
    present = sorted(set(int(l) for l in labels[:count]))
    for label in present:
        os.makedirs(os.path.join(out_dir, split, CLASSES[label]), exist_ok=True)
    if count and len(present) < len(CLASSES):
        missing = [CLASSES[l] for l in range(len(CLASSES)) if l not in present]
        print(f"make_image_folder: warning: {split} has no image of {', '.join(missing)}; "
              f"ImageFolder's labels will not be Fashion-MNIST's", file=sys.stderr)
    total = 0
    for i in range(count):
        grey = Image.fromarray(images[i], mode="L")
        # Resize the grey image first and convert after: the same bilinear
        # result on all three channels for a third of the work.
        rgb = grey.resize((size, size), Image.BILINEAR).convert("RGB")
        path = os.path.join(out_dir, split, CLASSES[labels[i]], f"{i:05d}.{fmt}")
        if fmt == "jpg":
            rgb.save(path, format="JPEG", quality=quality)
        else:
            rgb.save(path, format="PNG")
        total += os.path.getsize(path)
    return count, total


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--train", type=int, default=3000, help="training images to write")
    parser.add_argument("--val", type=int, default=1000, help="test images to write")
    parser.add_argument("--size", type=int, default=224, help="output side in pixels")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality")
    parser.add_argument("--format", choices=("jpg", "png"), default="jpg")
    args = parser.parse_args(argv)

    files = {
        "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
        "val": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
    }
    # Check everything before writing anything, so a refused run leaves no
    # half-made tree behind.
    for split in files:
        if non_empty_dir(os.path.join(args.out_dir, split)):
            print(f"make_image_folder: {os.path.join(args.out_dir, split)} exists and is not "
                  f"empty; refusing to mix trees", file=sys.stderr)
            return 2
        for name in files[split]:
            path = os.path.join(DATA_DIR, name)
            if not os.path.isfile(path):
                print(f"make_image_folder: {path} is missing; "
                      f"apt-get install dataset-fashion-mnist", file=sys.stderr)
                return 2

    start = time.monotonic()
    counts = {"train": args.train, "val": args.val}
    data = {}
    for split in files:
        images = read_idx(os.path.join(DATA_DIR, files[split][0]))
        labels = read_idx(os.path.join(DATA_DIR, files[split][1]))
        if not 0 <= counts[split] <= min(len(images), len(labels)):
            print(f"make_image_folder: --{split} {counts[split]} out of range "
                  f"[0, {len(images)}]", file=sys.stderr)
            return 2
        data[split] = (images, labels)
    written = 0
    nbytes = 0
    for split, (images, labels) in data.items():
        n, b = write_split(args.out_dir, split, images, labels, counts[split], args.size,
                           args.format, args.quality)
        written += n
        nbytes += b
    print(f"make_image_folder: wrote {written} files ({args.train} train, {args.val} val), "
          f"{nbytes} bytes in {time.monotonic() - start:.1f} s under {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
