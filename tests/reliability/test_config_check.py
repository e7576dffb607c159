"""Issue 17, finding 5 and 6: a config is checked before anything runs, and every error names the key."""

import copy
from pathlib import Path
from typing import Any, Dict, List

import pytest
from omegaconf import OmegaConf

from oml.cli import main
from oml.const import PROJECT_ROOT
from oml.lightning.pipelines.config_check import ConfigError, check_config, interpolated_keys
from tests.lightning.pipelines.conftest import compose_mock_config, tiny_train_config

MOCK = PROJECT_ROOT / "pipelines" / "mock"


@pytest.fixture()
def cfg(mock_dataset_root: Path, tmp_path: Path) -> Dict[str, Any]:
    return tiny_train_config(mock_dataset_root, tmp_path)


@pytest.mark.parametrize(
    "name, pipeline",
    [
        ("train", "train"),
        ("train_postprocessor", "train_postprocessor"),
        ("validate", "validate"),
        ("validate_with_postprocessor", "validate"),
        ("predict", "predict"),
    ],
)
def test_the_mock_configs_pass(name: str, pipeline: str, mock_dataset_root: Path) -> None:
    cfg = compose_mock_config(name, [f"dataset_root={mock_dataset_root}"] if name != "predict" else [])
    if pipeline == "predict":
        cfg["data_dir"] = str(mock_dataset_root / "images")
    checked = check_config(cfg, pipeline)
    assert "${" not in str(checked)  # interpolations resolved


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("valid_perod", 1, r"Unknown config key 'valid_perod'.*Did you mean 'valid_period'\?"),
        ("log_imags", True, r"Unknown config key 'log_imags'.*Did you mean 'log_images'\?"),
        ("max_epochs", "abc", r"max_epochs must be a positive integer, got 'abc' of type str"),
        ("max_epochs", 0, r"max_epochs must be a positive integer, got 0"),
        ("valid_period", 2.5, r"valid_period must be a positive integer, got 2.5 of type float"),
        ("num_workers", True, r"num_workers must be a non-negative integer, got True of type bool"),
        ("log_images", "yes", r"log_images must be True or False, got 'yes'"),
        ("dataset_root", "/no/such/folder", r"dataset_root='/no/such/folder' is not an existing folder"),
        ("ckpt_path", "/no/such.ckpt", r"ckpt_path='/no/such.ckpt' is not an existing file"),
        ("mode_for_checkpointing", "maximum", r"mode_for_checkpointing must be one of \['max', 'min'\]"),
        ("metric_for_checkpointing", "OVERALL/cmc/5", r"'OVERALL/cmc/5' is not among the metrics.*'OVERALL/cmc/1'"),
        ("metric_for_checkpointing", "OVERALL/cmc1", r"Did you mean 'OVERALL/cmc/1'\?"),
        ("sampler", "balance", r"sampler must be a block \{name: <registry name>, args"),
        ("devices", [0, "a"], r"devices must be a count or a list of device ids"),
    ],
)
def test_bad_top_level_values_are_named(cfg: Dict[str, Any], key: str, value: Any, message: str) -> None:
    cfg[key] = value
    with pytest.raises(ConfigError, match=message):
        check_config(cfg, "train")


@pytest.mark.parametrize(
    "path, value, message",
    [
        (["optimizer", "args", "lr"], "abc", r"optimizer.args.lr must be a non-negative number, got 'abc'"),
        (["metric_args", "cmc_topk"], [1], r"Unknown config key 'metric_args.cmc_topk'.*Did you mean 'cmc_top_k'\?"),
        (["metric_args", "cmc_top_k"], [0], r"metric_args.cmc_top_k must be a list of positive integers"),
        (["lightning_trainer_extra_args", "max_epoch"], 1, r"'lightning_trainer_extra_args.max_epoch'.*'max_epochs'"),
        (["scheduling"], {"scheduler_interval": "day"}, r"scheduling.scheduler_interval must be one of"),
        (["extractor", "arg"], {}, r"extractor has the keys \['arg'\]; a component block has only `name` and `args`"),
    ],
)
def test_bad_nested_values_are_named(cfg: Dict[str, Any], path: List[str], value: Any, message: str) -> None:
    node = cfg
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ConfigError, match=message):
        check_config(cfg, "train")


def test_a_metric_of_a_category_is_accepted_only_with_categories(cfg: Dict[str, Any]) -> None:
    cfg["metric_for_checkpointing"] = "shapes/cmc/1"
    with pytest.raises(ConfigError, match="not among the metrics"):
        check_config(cfg, "train")
    cfg["metric_args"]["categories_key"] = "categories"
    check_config(cfg, "train")


def test_bookkeeping_and_interpolation_only_keys_stay_legal(cfg: Dict[str, Any]) -> None:
    raw = copy.deepcopy(cfg)
    raw.update({"tags": ["mock"], "postfix": "x", "my_lr": 0.01})
    raw["optimizer"]["args"]["lr"] = "${my_lr}"
    assert interpolated_keys(raw) == {"my_lr"}
    for config in (raw, OmegaConf.create(raw)):  # a dict with ${...} strings, and an OmegaConf config
        assert check_config(config, "train")["optimizer"]["args"]["lr"] == 0.01
    # resolved already (a plain dict): a key whose value is used elsewhere is taken for an interpolation source
    resolved = {**cfg, "backbone": "resnet10t", "unused_flag": 3}
    with pytest.raises(ConfigError, match="Unknown config key 'unused_flag'"):
        check_config(resolved, "train")
    del resolved["unused_flag"]
    check_config(resolved, "train")


def test_missing_keys_are_listed(cfg: Dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"The train config misses the required keys \['criterion', 'max_epochs'\]"):
        check_config({k: v for k, v in cfg.items() if k not in ("criterion", "max_epochs")}, "train")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["+valid_perod=1"], "Did you mean 'valid_period'?"),
        (["max_epochs=abc"], "max_epochs must be a positive integer, got 'abc'"),
        (["optimizer.args.lr=abc"], "optimizer.args.lr must be a non-negative number, got 'abc'"),
        (["metric_for_checkpointing=OVERALL/cmc/2"], "'OVERALL/cmc/2' is not among the metrics"),
    ],
)
def test_cli_refuses_before_creating_anything(
    mock_dataset_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    overrides: List[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(MOCK / "train.yaml"), f"dataset_root={mock_dataset_root}", "logs_folder=run", *overrides])
    assert exit_info.value.code != 0
    captured = capsys.readouterr()
    assert message in captured.err + captured.out
    assert not (tmp_path / "logs" / "run" / "checkpoints").exists()
    assert not list((tmp_path / "logs" / "run").glob("lightning_logs"))
