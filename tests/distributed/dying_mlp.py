"""A model for test_elastic.py (`--model dying_mlp:factory`): batchtrain's mlp, except that rank 1
of a torchrun job dies (os._exit(1), as a killed worker would) where $DYING_MLP_AT says:
"attempt:step,..." pairs, e.g. "0:1,1:7": in step 1 of the first attempt, in step 7 of the first
restart (its own training forward pass number, counted from 1 in each attempt).
"""
import os

from batchtrain.models.mlp import mlp


def factory(input_shape, n_outputs, **options):
    model = mlp(input_shape, n_outputs, **options)
    deaths = dict(pair.split(":") for pair in os.environ.get("DYING_MLP_AT", "").split(",") if pair)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if os.environ.get("RANK") == "1" and attempt in deaths:
        model.register_forward_pre_hook(_die_at(int(deaths[attempt])))
    return model


def _die_at(forward_pass: int):
    passes = 0

    def count_and_die(module, inputs):
        nonlocal passes
        passes += module.training  # evaluation passes do not count
        if passes == forward_pass:
            os._exit(1)

    return count_and_die
