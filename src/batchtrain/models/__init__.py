"""Built-in models and the model spec that names them."""
from batchtrain.models.init import keras_init_
from batchtrain.models.mlp import mlp
from batchtrain.models.seed_cnn import seed_cnn
from batchtrain.models.spec import BUILTIN_MODELS, ModelSpec, resolve_factory

__all__ = ["BUILTIN_MODELS", "ModelSpec", "keras_init_", "mlp", "resolve_factory", "seed_cnn"]
