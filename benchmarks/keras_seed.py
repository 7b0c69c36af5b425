"""The design document's worked example in Keras, as its users run it today: the seed job that
benchmarks/keras_side_by_side.py races batchtrain against. Runs in the Keras venv
(benchmarks/requirements-keras.txt), not batchtrain's, and imports nothing of batchtrain.

    .venv-keras/bin/python benchmarks/keras_seed.py --epochs 2 --policy mixed_bfloat16

Conv2D(32, 3x3, relu) > MaxPool2 > Conv2D(64, 3x3, relu) > MaxPool2 > Flatten > Dense(64, relu) >
Dense(10, softmax); Adam (Keras' defaults); batch 128; validation_split 0.2; then test accuracy.
The data: Fashion-MNIST's IDX files on disk (MNIST cannot be downloaded here), scaled to [0, 1].
Prints one JSON line: per-epoch training seconds (the epoch's start to its validation's start, so
validation is off the clock, as in batchtrain's epoch records), the test accuracy and the policy.
"""
import argparse
import gzip
import json
import os
import sys
import time

import numpy as np

DATA_DIR = "/usr/share/datasets/fashion-mnist"


def read_idx(path: str) -> np.ndarray:
    """An IDX file (gzipped or not) as a numpy array: magic 0x0000 + type 0x08 (uint8) + ndim,
    then ndim big-endian uint32 sizes, then the data (Y. LeCun's MNIST page describes the format)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as file:
        content = file.read()
    if content[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path}: not an IDX file of unsigned bytes")
    ndim = content[3]
    shape = tuple(int.from_bytes(content[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(content, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load(data_dir: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    for suffix in (".gz", ""):
        images = os.path.join(data_dir, f"{split}-images-idx3-ubyte{suffix}")
        if os.path.exists(images):
            labels = os.path.join(data_dir, f"{split}-labels-idx1-ubyte{suffix}")
            x = read_idx(images).astype("float32")[..., None] / 255.0
            return x, read_idx(labels).astype("int64")
    sys.exit(f"no {split} IDX files in {data_dir}; install Debian's dataset-fashion-mnist")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--policy", default="float32", choices=("float32", "mixed_bfloat16"),
                        help="Keras' dtype policy (keras.mixed_precision.set_global_policy)")
    parser.add_argument("--data-dir", default=DATA_DIR)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import keras  # noqa: PLC0415 (after argument checks: importing TensorFlow takes seconds)
    from keras import layers  # noqa: PLC0415

    keras.utils.set_random_seed(args.seed)
    keras.mixed_precision.set_global_policy(args.policy)
    (x_train, y_train), (x_test, y_test) = load(args.data_dir, "train"), load(args.data_dir, "t10k")
    y_train, y_test = keras.utils.to_categorical(y_train, 10), keras.utils.to_categorical(y_test, 10)
    model = keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Flatten(),
        layers.Dense(64, activation="relu"),
        # float32 output under mixed precision, as Keras' mixed-precision guide recommends
        layers.Dense(10, activation="softmax", dtype="float32"),
    ])
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])

    class EpochClock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_test_begin(self, logs=None):  # fit's validation starts: the training pass is over
            self.trained = time.perf_counter()  # (no per-batch hook: Keras syncs on those)

        def on_epoch_end(self, epoch, logs=None):
            train_s.append(self.trained - self.started)

    train_s: list[float] = []
    model.fit(x_train, y_train, batch_size=128, epochs=args.epochs, validation_split=0.2,
              callbacks=[EpochClock()], verbose=0)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(json.dumps({"epoch_train_s": train_s, "train_samples": int(len(x_train) * 0.8),
                      "test_accuracy": float(accuracy), "policy": args.policy,
                      "keras": keras.__version__}))


if __name__ == "__main__":
    main()
