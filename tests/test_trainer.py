"""Trainer: equivalence with a hand-written loop, ground truth on regression, the API's contract."""
import copy
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from batchtrain import Trainer
from batchtrain.data.iterator import epoch_order


def small_classifier(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))


def classification_data(n=100, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=generator)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return x, y


def hand_written_loop(model, optimizer, x, y, batch_size, epochs, seed):
    """The plain PyTorch loop a user writes, with batchtrain's documented batch order."""
    for epoch in range(epochs):
        order = epoch_order(len(x), seed, epoch)
        for start in range(0, len(x), batch_size):
            index = order[start:start + batch_size]
            loss = F.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model


@pytest.mark.parametrize("optimizer, torch_optimizer", [
    (partial(torch.optim.SGD, lr=0.05, momentum=0.9), partial(torch.optim.SGD, lr=0.05, momentum=0.9)),
    ("sgd", partial(torch.optim.SGD, lr=0.01)),
    ("adam", partial(torch.optim.Adam, lr=1e-3, betas=(0.9, 0.999), eps=1e-7)),
])
def test_fixed_batch_loop_matches_hand_written_loop(optimizer, torch_optimizer):
    x, y = classification_data()
    trainer = Trainer(small_classifier(0), optimizer=optimizer, seed=7, device="cpu")
    trainer.fit(x, y, batch_size=16, epochs=3)  # 100 samples: the last batch of each epoch has 4
    reference = small_classifier(0)
    hand_written_loop(reference, torch_optimizer(reference.parameters()), x, y, 16, 3, seed=7)
    for ours, theirs in zip(trainer.model_.parameters(), reference.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert trainer.step_ == 3 * 7 and trainer.samples_seen_ == 300


def test_unshuffled_loop_walks_the_data_in_order():
    x, y = classification_data(40)
    trainer = Trainer(small_classifier(1), optimizer=partial(torch.optim.SGD, lr=0.1), device="cpu")
    trainer.fit(x, y, batch_size=8, epochs=1, shuffle=False)
    reference = small_classifier(1)
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    for start in range(0, 40, 8):
        optimizer.zero_grad()
        F.cross_entropy(reference(x[start:start + 8]), y[start:start + 8]).backward()
        optimizer.step()
    for ours, theirs in zip(trainer.model_.parameters(), reference.parameters()):
        torch.testing.assert_close(ours, theirs)


def test_regression_recovers_known_linear_model():
    rng = np.random.default_rng(0)
    true_weights, true_bias = np.array([1.5, -2.0, 0.5, 3.0]), -0.7
    x = rng.normal(size=(2000, 4)).astype(np.float32)
    y = (x @ true_weights + true_bias + rng.normal(scale=0.01, size=2000)).astype(np.float32)
    trainer = Trainer("mlp", model_options={"hidden": []}, optimizer="sgd", lr=0.05, seed=0)
    history = trainer.fit(x, y, batch_size=32, epochs=10)
    linear = trainer.model_[1]
    np.testing.assert_allclose(linear.weight.detach().numpy()[0], true_weights, atol=0.01)
    np.testing.assert_allclose(linear.bias.item(), true_bias, atol=0.01)
    assert trainer.task_.kind == "regression"
    assert {"loss", "mae", "rmse", "r2"} <= set(history[-1]) and history[-1]["r2"] > 0.999


def test_one_hot_labels_train_like_integer_labels():
    x, y = classification_data()
    results = []
    for labels in (y, F.one_hot(y, 3).float().numpy()):
        trainer = Trainer(small_classifier(0), seed=3, device="cpu")
        trainer.fit(x, labels, batch_size=10, epochs=2)
        results.append([p.detach().clone() for p in trainer.model_.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


def test_binary_task_from_single_logit_model():
    x, y = classification_data()
    binary = (y > 0).long()
    torch.manual_seed(0)
    trainer = Trainer(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 1)), lr=0.01, seed=0)
    history = trainer.fit(x, binary, batch_size=16, epochs=30)
    assert trainer.task_.kind == "binary"
    assert history[-1]["accuracy"] > 0.9
    probabilities = trainer.predict(x[:5])
    assert probabilities.shape == (5, 1) and np.all((probabilities >= 0) & (probabilities <= 1))


def test_validation_split_holds_out_the_last_samples_before_shuffling():
    x, y = classification_data(100)
    trainer = Trainer(small_classifier(0), seed=0, device="cpu")
    history = trainer.fit(x, y, batch_size=10, epochs=1, validation_split=0.2)
    held_out = trainer.evaluate(x[80:], y[80:])
    assert history[0]["val_loss"] == pytest.approx(held_out["loss"], rel=1e-6)
    assert history[0]["val_accuracy"] == held_out["accuracy"]
    assert trainer.samples_seen_ == 80


def test_validation_data_overrides_split_and_history_is_complete():
    x, y = classification_data(100)
    trainer = Trainer(small_classifier(0), seed=0)
    history = trainer.fit(x[:70], y[:70], batch_size=10, epochs=2, validation_data=(x[70:], y[70:]),
                          validation_split=0.5)
    assert trainer.samples_seen_ == 140
    assert len(history) == 2 and history.history["epoch"] == [1, 2]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "time_s", "samples_per_s"):
        assert all(isinstance(logs[key], float) for logs in history), key


def test_evaluate_matches_manual_computation_and_predict_returns_probabilities():
    x, y = classification_data(50)
    trainer = Trainer(small_classifier(0), seed=0)
    trainer.fit(x, y, batch_size=10, epochs=1)
    with torch.no_grad():
        logits = trainer.model_(x)
    results = trainer.evaluate(x, y, batch_size=7)  # batch size must not change the means
    assert results["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert results["accuracy"] == pytest.approx((logits.argmax(1) == y).float().mean().item())
    probabilities = trainer.predict(x.numpy(), batch_size=16)
    np.testing.assert_allclose(probabilities, torch.softmax(logits, 1).numpy(), rtol=1e-5, atol=1e-6)


def test_dataset_input_trains_like_arrays():
    x, y = classification_data(60)
    dataset = torch.utils.data.TensorDataset(x, y)
    from_dataset = Trainer(small_classifier(0), seed=5)
    from_dataset.fit(dataset, batch_size=16, epochs=2, validation_split=0.25)
    from_arrays = Trainer(small_classifier(0), seed=5)
    from_arrays.fit(x, y, batch_size=16, epochs=2, validation_split=0.25)
    for a, b in zip(from_dataset.model_.parameters(), from_arrays.model_.parameters()):
        torch.testing.assert_close(a, b)
    assert from_dataset.history_[-1]["val_loss"] == pytest.approx(from_arrays.history_[-1]["val_loss"])


def test_save_and_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((64, 1, 12, 12), dtype=np.float32)
    y = rng.integers(0, 4, 64)
    trainer = Trainer("seed-cnn", seed=0)
    trainer.fit(x, y, batch_size=16, epochs=1)
    trainer.save(tmp_path)
    loaded = Trainer.load(tmp_path, seed=1)
    np.testing.assert_array_equal(loaded.predict(x), trainer.predict(x))
    assert loaded.evaluate(x, y) == trainer.evaluate(x, y)
    # A loaded trainer keeps training from the saved weights: as a new trainer handed a copy of
    # the trained module does, seed for seed (the optimizer's state is not saved: both start it).
    loaded.fit(x, y, batch_size=16, epochs=1)
    from_module = Trainer(copy.deepcopy(trainer.model_), seed=1)
    from_module.fit(x, y, batch_size=16, epochs=1)
    for ours, theirs, saved in zip(loaded.model_.parameters(), from_module.model_.parameters(),
                                   trainer.model_.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
        assert not torch.equal(ours, saved)  # and it did train
    assert loaded.step_ == 4 and loaded.samples_seen_ == 64


def test_custom_module_needs_the_module_to_load(tmp_path):
    x, y = classification_data(30)
    trainer = Trainer(small_classifier(0), seed=0)
    trainer.fit(x, y, epochs=1)
    trainer.save(tmp_path)
    with pytest.raises(ValueError, match="custom nn.Module; pass the module"):
        Trainer.load(tmp_path)
    loaded = Trainer.load(tmp_path, model=small_classifier(9))
    np.testing.assert_array_equal(loaded.predict(x), trainer.predict(x))


def test_same_seed_same_run_different_seed_different_run():
    x, y = classification_data(80)
    def final_loss(seed):
        return Trainer("mlp", seed=seed).fit(x, y, batch_size=8, epochs=2)[-1]["loss"]
    assert final_loss(1) == final_loss(1)
    assert final_loss(1) != final_loss(2)
    unseeded = Trainer("mlp")
    unseeded.fit(x, y, epochs=1)
    assert isinstance(unseeded.seed_, int)  # drawn, and recorded so the run can be repeated


def test_fit_twice_continues_training_and_resets_history():
    x, y = classification_data(80)
    trainer = Trainer(small_classifier(0), seed=0)
    trainer.fit(x, y, batch_size=8, epochs=2)
    first_model = trainer.model_
    history = trainer.fit(x, y, batch_size=8, epochs=1)
    assert trainer.model_ is first_model and len(history) == 1 and trainer.step_ == 30


def test_a_resumed_run_keeps_the_checkpoints_seed_for_later_fits(tmp_path):
    from batchtrain import Checkpoint
    x, y = classification_data(60)
    first = Trainer(small_classifier(0), device="cpu")  # seed drawn
    first.fit(x, y, batch_size=10, epochs=1, callbacks=[Checkpoint(tmp_path)])
    resumed = Trainer(small_classifier(0), device="cpu")  # draws another seed
    resumed.fit(x, y, batch_size=10, epochs=2, resume=tmp_path)
    assert resumed.seed_ == first.seed_ == resumed.state_.seed


class NaNOnSecondStep(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner, self.calls = small_classifier(0), 0

    def forward(self, x):
        self.calls += self.training
        return self.inner(x) * (float("nan") if self.training and self.calls == 2 else 1.0)


def test_last_step_is_none_after_a_non_finite_stop():
    x, y = classification_data(40)
    trainer = Trainer(NaNOnSecondStep(), seed=0, device="cpu", max_physical_batch=10)
    trainer.prepare(x, y)
    trainer.model_.calls = 0
    with pytest.warns(UserWarning, match="non-finite"):
        trainer.fit(x, y, batch_size=10, epochs=3)
    assert trainer.stop_reason_ and "step 2" in trainer.stop_reason_ and trainer.last_step_ is None
