"""Options and options files (cli/config.py, cli/configfiles.py) driven directly: ranges checked before
any data is read, files read as untrusted text, and what a resumed run may still change."""
import re
import time

import pytest
import yaml

from batchtrain.cli.config import FitConfig, read_config_file, read_run_record, resume_config, to_yaml
from batchtrain.cli.configfiles import MAX_CONFIG_BYTES
from batchtrain.errors import ConfigError

BILLION_LAUGHS = "".join(  # 9 levels of 9 aliases each: 9**9 strings once expanded
    ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n']
    + [f"l{level}: &l{level} [{','.join([f'*l{level - 1}'] * 9)}]\n" for level in range(1, 9)])


@pytest.mark.parametrize("options, message", [
    ({"lr": float("inf")}, "lr must be a number in (0, 1000], got inf"),
    ({"lr": 1e38}, "lr must be a number in (0, 1000], got 1e+38"),
    ({"lr": float("nan")}, "lr must be a number in (0, 1000], got nan"),
    ({"lr": 0.0}, "lr must be a number in (0, 1000], got 0.0"),
    ({"optimizer": "sgd", "momentum": float("nan")}, "momentum must be in [0, 1), got nan"),
    ({"optimizer": "sgd", "momentum": -1.0}, "momentum must be in [0, 1), got -1.0"),
    ({"optimizer": "rmsprop", "momentum": 1.0}, "momentum must be in [0, 1), got 1.0"),
    ({"optimizer": "adam", "momentum": 0.9}, "momentum applies to sgd and rmsprop, not adam"),
    ({"optimizer": "sgd", "nesterov": True}, "nesterov needs momentum > 0, e.g. --momentum 0.9"),
    ({"optimizer": "adam", "nesterov": True}, "nesterov applies to sgd, not adam"),
], ids=["lr-inf", "lr-1e38", "lr-nan", "lr-0", "momentum-nan", "momentum-negative", "momentum-1",
        "momentum-adam", "nesterov-no-momentum", "nesterov-adam"])
def test_optimizer_settings_are_checked_before_any_data_is_read(options, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        FitConfig(**options).validate()


def test_sane_optimizer_settings_pass():
    FitConfig(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True).validate()
    FitConfig(optimizer="rmsprop", momentum=0.0).validate()


def write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


@pytest.mark.parametrize("name, text, message", [
    ("both.yaml", "batch_size: 16\nbatch-size: 32\n",
     "sets batch_size twice ('batch_size' and 'batch-size'); keep one"),
    ("twice.yaml", "epochs: 1\nseed: 2\nepochs: 3\n", "sets 'epochs' twice (line 3); keep one"),
    ("both.json", '{"batch-size": 16, "batch_size": 32}',
     "sets batch_size twice ('batch-size' and 'batch_size'); keep one"),
    ("twice.json", '{"epochs": 1, "epochs": 3}', "sets 'epochs' twice; keep one"),
    ("both.toml", "batch_size = 16\nbatch-size = 32\n",
     "sets batch_size twice ('batch_size' and 'batch-size'); keep one"),
], ids=["yaml-spellings", "yaml-twice", "json-spellings", "json-twice", "toml-spellings"])
def test_a_key_given_twice_is_refused_not_the_last_taken(tmp_path, name, text, message):
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigError, match=re.escape(f"config file {path} {message}")):
        read_config_file(path)


def test_a_yaml_alias_bomb_is_refused_at_its_first_anchor_quickly(tmp_path):
    path = write(tmp_path, "laughs.yaml", BILLION_LAUGHS)
    assert path.stat().st_size < 500
    started = time.perf_counter()
    with pytest.raises(ConfigError) as refused:
        read_config_file(path)
    assert time.perf_counter() - started < 1.0
    assert str(refused.value) == (f"config file {path} uses a YAML anchor or alias ('l0', line 1); "
                                  "write each value out instead")


def test_yaml_without_aliases_still_reads(tmp_path):
    path = write(tmp_path, "plain.yaml", "hidden: [8, 4]\nlr: 0.05\nepochs: 2\n")
    assert read_config_file(path) == {"hidden": [8, 4], "lr": 0.05, "epochs": 2}


def test_files_larger_than_the_bound_are_refused_without_reading_them_whole(tmp_path):
    path = write(tmp_path, "huge.yaml", "# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
    with pytest.raises(ConfigError, match=re.escape(f"config file {path} is larger than "
                                                    f"{MAX_CONFIG_BYTES} bytes")):
        read_config_file(path)


def test_a_file_that_is_not_utf8_is_named_with_the_fix(tmp_path):
    path = write(tmp_path, "latin1.yaml", "data: caf\xe9.npz\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=re.escape(f"config file {path} is not UTF-8 text "
                                                    "(byte 9); save it as UTF-8")):
        read_config_file(path)


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    path = write(tmp_path, "bom.json", b'\xef\xbb\xbf{"epochs": 2}')
    assert read_config_file(path) == {"epochs": 2}


@pytest.mark.parametrize("name, text", [
    ("long.yaml", "hidden: '" + "x" * 100_000 + "'\n"),
    ("keys.yaml", "".join(f"{'k' * 1000}{index}: 1\n" for index in range(100))),
    ("deep.json", "[" * 100_000 + "]" * 100_000),
    ("long.json", '{"optimizer": "' + "a" * 3000 + '"}'),
    ("long-int.yaml", "epochs: -" + "9" * 4000 + "\n"),
    ("long-list.yaml", "hidden: [" + ", ".join(["-1"] * 10_000) + "]\n"),
], ids=["long-value", "many-long-keys", "deeply-nested", "long-choice", "long-int", "long-list"])
def test_every_message_about_a_file_is_short(tmp_path, name, text):
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigError) as refused:
        FitConfig(**read_config_file(path)).validate()
    assert len(str(refused.value)) < 1000, len(str(refused.value))


# -- a run's config.yaml -------------------------------------------------------------------------

def test_config_yaml_round_trips_and_holds_no_anchors(tmp_path):
    shared = [8, 4]
    config = FitConfig(hidden=shared, features=["a", "b"], seed=3)
    config.features = shared  # the same object twice would be an anchor and an alias in YAML
    text = to_yaml(config)
    assert "&" not in text and "*" not in text
    path = write(tmp_path, "config.yaml", text.replace("features:\n- 8\n- 4\n", "features: null\n"))
    assert read_run_record(path).hidden == [8, 4]


@pytest.mark.parametrize("edit, message", [
    (lambda text: text + "extra: 1\n", "has unknown option(s) extra; the run directory is damaged"),
    (lambda text: text.replace("epochs: 5", "epochs: many"),
     "epochs in {path} must be an integer, got 'many'; the run directory is damaged"),
    (lambda text: text.replace("epochs: 5", "epochs: 0"),
     "epochs must be >= 1, got 0; the run directory is damaged"),
    (lambda text: text.replace("seed: 3", "seed: &s 3") + "hidden: *s\n",
     "uses a YAML anchor or alias ('s', line"),
    (lambda text: text + "seed: 4\n", "sets 'seed' twice"),
    (lambda text: text.replace("seed: 3", "seed: 3 # caf\xe9"), "is not UTF-8 text"),
    (lambda text: text.replace("threads: null", "threads: -2"), "threads must be 'auto' or an "
                                                                 "integer >= 1, got -2"),
], ids=["unknown-key", "wrong-type", "out-of-range", "alias", "twice", "latin-1", "threads"])
def test_a_damaged_run_config_is_refused_by_field(tmp_path, edit, message):
    path = tmp_path / "config.yaml"
    path.write_bytes(edit(to_yaml(FitConfig(seed=3))).encode("latin-1"))
    with pytest.raises(ConfigError) as refused:
        read_run_record(path)
    assert message.format(path=path) in str(refused.value)
    assert str(path) in str(refused.value)


# -- what a resumed run may change ---------------------------------------------------------------

def test_resume_keeps_the_record_and_applies_the_options_that_can_change(tmp_path):
    recorded = FitConfig(model="mlp", hidden=[8], lr=0.01, seed=3, output="old/place")
    resumed = resume_config(recorded, {"epochs": 9, "threads": 1, "progress": "none",
                                       "hidden": [8], "lr": 0.01}, tmp_path)
    assert (resumed.epochs, resumed.threads, resumed.progress) == (9, 1, "none")
    assert (resumed.hidden, resumed.lr, resumed.seed) == ([8], 0.01, 3)  # unchanged values pass
    assert resumed.output == str(tmp_path)


@pytest.mark.parametrize("given, flags", [
    ({"hidden": [128]}, "--hidden"),
    ({"lr": 0.001}, "--lr"),
    ({"seed": 4, "batch_size": 64}, "--seed, --batch-size"),
    ({"validation_split": 0.5}, "--validation-split"),
], ids=["model", "lr", "seed-and-batch", "data-split"])
def test_resume_refuses_a_change_that_its_checkpoint_would_undo(tmp_path, given, flags):
    recorded = FitConfig(model="mlp", hidden=[8], lr=0.01, seed=3)
    with pytest.raises(ConfigError) as refused:
        resume_config(recorded, given, tmp_path)
    message = str(refused.value)
    assert message.startswith(f"{flags} cannot change when resuming {tmp_path}")
    assert "only these may change: --epochs, --test-data" in message


def test_resume_refuses_another_output(tmp_path):
    with pytest.raises(ConfigError, match="continues that run in its own directory; drop --output"):
        resume_config(FitConfig(), {"output": str(tmp_path / "elsewhere")}, tmp_path)


def test_yaml_loads_our_own_dump_like_safe_load():
    config = FitConfig(hidden=[8, 4], features=["a"], threads="auto")
    assert yaml.safe_load(to_yaml(config)) == config.to_dict()


def test_a_run_trained_with_more_threads_than_this_machine_has_cores_still_reads(tmp_path):
    # evaluate and predict ignore threads; a resumed fit is checked for this machine (validate)
    path = tmp_path / "config.yaml"
    path.write_text(to_yaml(FitConfig(threads=100000)))
    recorded = read_run_record(path)
    with pytest.raises(ConfigError, match="threads must be at most"):
        resume_config(recorded, {}, tmp_path)
    assert resume_config(recorded, {"threads": "auto"}, tmp_path).threads == "auto"
