#!/usr/bin/env python3
"""Regenerate the embedded Fashion-MNIST slice used by Frugal when no full copy is installed.

Selection (deterministic, class-balanced): from the training split, the first 1000 images of
each of the 10 classes; from the t10k split, the first 200 images of each class. Selected
images keep their original relative order. Output: four gzip-compressed IDX files (level 9,
mtime 0, so reruns produce identical bytes).

Usage: python3 make_slice.py [SOURCE_DIR] [OUT_DIR]
  SOURCE_DIR defaults to /usr/share/datasets/fashion-mnist (Debian package dataset-fashion-mnist)
  OUT_DIR defaults to the directory holding this script
"""
import gzip
import os
import struct
import sys

SPLITS = [
    # (source prefix, output prefix, per-class count)
    ("train", "fashion-train", 1000),
    ("t10k", "fashion-test", 200),
]


def read_idx(path):
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndims = raw[3]
    dims = list(struct.unpack(">" + "i" * ndims, raw[4:4 + 4 * ndims]))
    data = raw[4 + 4 * ndims:]
    count = 1
    for d in dims:
        count *= d
    if len(data) != count:
        raise ValueError(f"{path}: expected {count} data bytes for dims {dims}, found {len(data)}")
    return dims, data


def write_idx(path, dims, data):
    header = bytes([0, 0, 0x08, len(dims)]) + struct.pack(">" + "i" * len(dims), *dims)
    with open(path, "wb") as f:
        with gzip.GzipFile(filename="", mode="wb", fileobj=f, compresslevel=9, mtime=0) as gz:
            gz.write(header)
            gz.write(data)


def find(source_dir, stem):
    for name in (stem + ".gz", stem):
        p = os.path.join(source_dir, name)
        if os.path.exists(p):
            return p
    raise FileNotFoundError(os.path.join(source_dir, stem + "[.gz]"))


def main():
    source_dir = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist"
    out_dir = sys.argv[2] if len(sys.argv) > 2 else os.path.dirname(os.path.abspath(__file__))
    for src, dst, per_class in SPLITS:
        img_dims, images = read_idx(find(source_dir, f"{src}-images-idx3-ubyte"))
        lbl_dims, labels = read_idx(find(source_dir, f"{src}-labels-idx1-ubyte"))
        n, h, w = img_dims
        assert lbl_dims == [n], (img_dims, lbl_dims)
        taken = [0] * 10
        picked = []
        for i, y in enumerate(labels):
            if taken[y] < per_class:
                taken[y] += 1
                picked.append(i)
        assert taken == [per_class] * 10, taken
        size = h * w
        out_images = b"".join(images[i * size:(i + 1) * size] for i in picked)
        out_labels = bytes(labels[i] for i in picked)
        k = len(picked) // 1000
        write_idx(os.path.join(out_dir, f"{dst}-images-{k}k-idx3-ubyte.gz"), [len(picked), h, w], out_images)
        write_idx(os.path.join(out_dir, f"{dst}-labels-{k}k-idx1-ubyte.gz"), [len(picked)], out_labels)
        print(f"{src}: {len(picked)} images ({per_class} per class) -> {dst}-*-{k}k-*.gz")


if __name__ == "__main__":
    main()
