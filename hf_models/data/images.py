"""Image classification data: MNIST from its original IDX files (or any Hub image dataset) as a `datasets.DatasetDict`
with `image` and `label` features, and the stock transformers image processor configured for a model."""

import gzip
import struct
from pathlib import Path

import numpy as np
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, load_dataset


MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # the original recipe's normalisation


def _read_idx(path):
    """An IDX file (optionally gzip-compressed) as a numpy array: magic 0x0000 + dtype code + rank, then the dims."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as handle:
        data = handle.read()
    zero, dtype_code, rank = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (magic {data[:4].hex()})")
    dims = struct.unpack(f">{rank}I", data[4 : 4 + 4 * rank])
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank)
    if array.size != int(np.prod(dims)):
        raise ValueError(f"{path}: expected {int(np.prod(dims))} values for shape {dims}, found {array.size}")
    return array.reshape(dims)


def load_mnist(source):
    """MNIST as a `DatasetDict` with `train` (60,000) and `test` (10,000) splits of {image: PIL, label: 0-9}.

    `source` is a folder holding the four original IDX files (`train-images-idx3-ubyte.gz`, ...), or a Hub dataset
    id with `image` and `label` columns (e.g. `ylecun/mnist`), loaded with `datasets.load_dataset`.
    """
    folder = Path(source)
    if not folder.is_dir():
        if "/" not in str(source):
            raise ValueError(f"MNIST source {str(source)!r} is neither a folder of IDX files nor a Hub dataset id")
        return load_dataset(str(source))
    features = Features({"image": Image(), "label": ClassLabel(names=[str(d) for d in range(10)])})
    splits = {}
    for split, (images_name, labels_name) in MNIST_FILES.items():
        missing = [name for name in (images_name, labels_name) if not (folder / name).exists()]
        if missing:
            raise ValueError(f"MNIST folder {folder} lacks {missing}")
        images, labels = _read_idx(folder / images_name), _read_idx(folder / labels_name)
        if len(images) != len(labels):
            raise ValueError(f"{folder}: {len(images)} {split} images but {len(labels)} labels")
        splits[split] = Dataset.from_dict({"image": list(images), "label": labels.tolist()}, features=features)
    return DatasetDict(splits)


def image_processor_for(config, mean=MNIST_MEAN, std=MNIST_STD):
    """The stock `ViTImageProcessor` set up for an mHC image model: convert to RGB (as transformers' pipelines load
    images anyway), resize to `image_size`, scale to [0, 1], normalise with `mean`/`std` on every channel. A
    one-channel model reads the channel mean, which for a gray image is its gray value. Saved next to the model as
    `preprocessor_config.json`, it loads with `AutoImageProcessor` and `pipeline("image-classification")` without
    hf_models."""
    from transformers import ViTImageProcessor

    channels = 3 if config.num_channels in (1, 3) else config.num_channels
    return ViTImageProcessor(
        do_resize=True,
        size={"height": config.image_size, "width": config.image_size},
        resample=2,  # bilinear, as torchvision's Resize
        do_rescale=True,
        do_normalize=True,
        image_mean=[mean] * channels,
        image_std=[std] * channels,
        do_convert_rgb=channels == 3,
    )


def random_shift(image, max_shift, generator=None):
    """`image` (PIL) moved by a uniform random offset in [-max_shift, max_shift] pixels along each axis, the uncovered
    border filled with zeros (black, MNIST's background) and the size kept: the translation augmentation of the
    classic MNIST recipes. Offsets come from torch's generator, which the data-loader workers seed from the run's
    seed, so a run repeats."""
    if max_shift <= 0:
        return image
    from PIL import Image as PILImage

    dx, dy = torch.randint(-max_shift, max_shift + 1, (2,), generator=generator).tolist()
    shifted = PILImage.new(image.mode, image.size, 0)
    shifted.paste(image, (dx, dy))
    return shifted
