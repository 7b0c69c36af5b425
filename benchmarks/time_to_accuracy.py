"""Time to 90 % test accuracy on Fashion-MNIST with the reference CNN, per batch-size strategy.

    python benchmarks/time_to_accuracy.py [--target 0.90] [--every 6000] [--max-epochs 15]

Runs, one after another in one process (same data, seed and model initialisation): fixed 32, 128
(the reference recipe: Adam, lr 1e-3), 512, a doubling schedule (64 doubled every epoch up to
1024, sqrt lr coupling) and --batch-size auto (adaptive goodput, lr coupled). All train on the
60,000 training images. Test accuracy is measured every `--every` samples; evaluation time is
excluded from the clock. Prints a table (wall time and samples to the target, and the ratio to
the reference) and writes benchmarks/time_to_accuracy.png (accuracy vs training time, and the
auto run's batch size and loss over samples seen).
"""
import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from batchtrain import Callback, Trainer, load_dataset  # noqa: E402

CONFIGS = {"fixed 32": 32, "fixed 128 (reference)": 128, "fixed 512": 512,
           "double:64,1e,1024": "double:64,1e,1024", "auto": "auto"}


class TimeToAccuracy(Callback):
    """Evaluates test accuracy every `every` samples (off the clock); stops at `target`."""

    def __init__(self, x_test, y_test, every: int, target: float):
        self.x_test, self.y_test, self.every, self.target = x_test, y_test, every, target

    def on_fit_begin(self, trainer, info):
        self.curve, self.reached, self.eval_s = [], None, 0.0
        self.started = time.perf_counter()

    def on_batch_end(self, trainer, batch_size):
        samples = trainer.state_.samples_seen
        if samples // self.every == (samples - batch_size) // self.every:
            return
        paused = time.perf_counter()
        train_s = paused - self.started - self.eval_s  # the clock stops while evaluating
        accuracy = trainer.evaluate(self.x_test, self.y_test)["accuracy"]
        trainer.model_.train()
        self.eval_s += time.perf_counter() - paused
        self.curve.append((train_s, samples, accuracy))
        if accuracy >= self.target and self.reached is None:
            self.reached = (train_s, samples)
            trainer.stop_training = True


def run(name, batch_size, data, args):
    probe = TimeToAccuracy(data.x_test, data.y_test, args.every, args.target)
    lr_scaling = "sqrt" if name.startswith("double") else "auto"
    trainer = Trainer("seed-cnn", optimizer="adam", lr=1e-3, seed=args.seed, lr_scaling=lr_scaling)
    history = trainer.fit(data.x_train, data.y_train, batch_size=batch_size,
                          epochs=args.max_epochs, callbacks=[probe])
    return probe, history


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=0.90)
    parser.add_argument("--every", type=int, default=6000, help="samples between evaluations")
    parser.add_argument("--max-epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", help="run only these configurations")
    args = parser.parse_args()
    data = load_dataset("fashion-mnist")
    results = {}
    for name, batch_size in CONFIGS.items():
        if args.only and name not in args.only:
            continue
        probe, history = run(name, batch_size, data, args)
        results[name] = (probe, history)
        reached = f"{probe.reached[0]:.1f}s, {probe.reached[1]} samples" if probe.reached else "not reached"
        print(f"{name}: {reached}; best test accuracy {max(a for *_, a in probe.curve):.4f}", flush=True)
    report(results, args)


def report(results, args):
    reference = results.get("fixed 128 (reference)", (None,))[0]
    print(f"\ntime to {args.target:.1%} test accuracy (evaluation excluded), seed {args.seed}")
    print(f"{'configuration':24} {'seconds':>8} {'samples':>9} {'vs reference':>13}")
    for name, (probe, _) in results.items():
        if probe.reached is None:
            print(f"{name:24} {'-':>8} {'-':>9} {'not reached':>13}")
            continue
        ratio = (f"{reference.reached[0] / probe.reached[0]:.2f}x faster"
                 if reference is not None and reference.reached else "-")
        print(f"{name:24} {probe.reached[0]:8.1f} {probe.reached[1]:9d} {ratio:>13}")
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    for name, (probe, _) in results.items():
        left.plot([t for t, _, _ in probe.curve], [a for *_, a in probe.curve], label=name)
    left.axhline(args.target, color="grey", linestyle=":")
    left.set(xlabel="training time (s, evaluation excluded)", ylabel="test accuracy")
    left.legend()
    if "auto" in results:
        steps = results["auto"][1].steps
        right.step([s["samples_seen"] for s in steps], [s["batch_size"] for s in steps],
                   where="post", label="batch size (auto)")
        right.set(xlabel="samples seen", ylabel="logical batch (samples)")
        twin = right.twinx()
        twin.plot([s["samples_seen"] for s in steps if "noise_scale" in s],
                  [s["noise_scale"] for s in steps if "noise_scale" in s], color="tab:orange",
                  alpha=0.6, label="noise scale")
        twin.set_yscale("log")  # the estimate spans decades (and spikes where |G|^2 nears 0)
        twin.set_ylabel("noise scale B_simple (Adam geometry)")
        right.legend(loc="upper left")
    figure.tight_layout()
    path = Path(__file__).with_name("time_to_accuracy.png")
    figure.savefig(path, dpi=100)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
