"""The images the benchmarks train on: Fashion-MNIST's first training images when the dataset is
installed (`apt-get install dataset-fashion-mnist`), else seeded random images of that shape."""
import numpy as np

import batchtrain


def fashion_mnist_images(samples: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(x of shape (samples, 1, 28, 28) float32, y int labels, "fashion-mnist" or "synthetic")."""
    try:
        splits = batchtrain.load_dataset("fashion-mnist", download=False)
        return splits.x_train[:samples], splits.y_train[:samples], "fashion-mnist"
    except batchtrain.BatchTrainError:
        rng = np.random.default_rng(0)
        return (rng.random((samples, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, samples),
                "synthetic")
