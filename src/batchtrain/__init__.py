"""batchtrain: mini-batch training of PyTorch models."""
