import inspect
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf
from torch import nn

from oml.const import CONFIGS_PATH
from oml.losses.arcface import ArcFaceLoss
from oml.losses.pml import PMLCriterion
from oml.losses.triplet import TripletLossWithMiner
from oml.miners.inbatch_hard_tri import HardTripletsMiner
from oml.miners.inbatch_nhard_tri import NHardTripletsMiner
from oml.miners.miner_with_bank import MinerWithBank
from oml.miners.pml import PMLMiner
from oml.registry import show_registry
from oml.registry._base import RegistryKeyError
from oml.registry.losses import LOSSES_REGISTRY, PML_LEFT_OUT, PML_LOSSES, get_criterion, get_criterion_by_cfg
from oml.registry.miners import MINERS_REGISTRY, get_miner, get_miner_by_cfg
from oml.registry.optimizers import OPTIMIZERS_REGISTRY, get_optimizer, get_optimizer_by_cfg
from oml.registry.samplers import SAMPLERS_CATEGORIES_BASED, SAMPLERS_REGISTRY, get_sampler, get_sampler_by_cfg
from oml.registry.schedulers import SCHEDULERS_REGISTRY, get_scheduler, get_scheduler_by_cfg, parse_lr_lambda
from oml.samplers.balance import BalanceSampler
from oml.samplers.category_balance import CategoryBalanceSampler

LABELS = [0, 0, 1, 1, 2, 2, 3, 3]
LABEL2CATEGORY = {0: "a", 1: "a", 2: "b", 3: "b"}


def packaged(group):
    files = sorted((CONFIGS_PATH / group).glob("*.yaml"))
    assert files, group
    return files


def test_registry_names_as_oml() -> None:
    assert set(LOSSES_REGISTRY) == {
        "triplet",
        "triplet_plain",
        "triplet_with_miner",
        "surrogate_precision",
        "arcface",
        "mlp_arcface",
    }
    assert set(MINERS_REGISTRY) == {
        "all_triplets",
        "hard_cluster",
        "hard_triplets",
        "triplets_with_memory",
        "miner_with_bank",
        "n_hard_triplets",
    }
    assert set(SAMPLERS_REGISTRY) == {"balance", "category_balance", "distinct_category_balance"}
    assert set(SAMPLERS_CATEGORIES_BASED) == {"category_balance", "distinct_category_balance"}
    assert set(OPTIMIZERS_REGISTRY) == {
        "adadelta",
        "adagrad",
        "adam",
        "adamw",
        "adamax",
        "asgd",
        "lbfgs",
        "rmsprop",
        "rprop",
        "sgd",
    }
    assert set(SCHEDULERS_REGISTRY) == {
        "lambda",
        "multiplicative",
        "step",
        "multi_step",
        "exponential",
        "cosine_annealing",
        "cyclic",
        "one_cycle",
        "reduce_on_plateau",
    }


def load(path: Path, as_dictconfig: bool):
    return OmegaConf.load(path) if as_dictconfig else yaml.safe_load(path.read_text())


@pytest.mark.parametrize("as_dictconfig", [False, True])
def test_every_packaged_config_builds(as_dictconfig: bool) -> None:
    params = list(nn.Linear(3, 3).parameters())
    expected_files = {"criterion": 6, "miner": 6, "sampler": 3, "optimizer": 10, "scheduler": 9}
    for group, n_files in expected_files.items():
        files = packaged(group)
        assert len(files) == n_files
        for path in files:
            cfg = load(path, as_dictconfig)
            assert cfg["name"] == path.stem
            if group == "criterion":
                built = get_criterion_by_cfg(cfg, label2category=LABEL2CATEGORY)
                assert isinstance(built, LOSSES_REGISTRY[path.stem])
            elif group == "miner":
                assert isinstance(get_miner_by_cfg(cfg), MINERS_REGISTRY[path.stem])
            elif group == "sampler":
                sampler = get_sampler_by_cfg(cfg, labels=LABELS, label2category=LABEL2CATEGORY)
                assert isinstance(sampler, SAMPLERS_REGISTRY[path.stem])
                assert len(next(iter(sampler))) == sampler.batch_size
            elif group == "optimizer":
                optimizer = get_optimizer_by_cfg(cfg, params=params)
                assert isinstance(optimizer, OPTIMIZERS_REGISTRY[path.stem])
            else:
                optimizer = torch.optim.Adam(params, lr=0.1)
                scheduler = get_scheduler_by_cfg(cfg, optimizer=optimizer)
                assert isinstance(scheduler, SCHEDULERS_REGISTRY[path.stem])
                optimizer.step()
                scheduler.step(0.5) if path.stem == "reduce_on_plateau" else scheduler.step()
                assert len(scheduler.get_last_lr()) == 1


def test_nested_miner_and_runtime_kwargs() -> None:
    cfg = {
        "name": "triplet_with_miner",
        "args": {
            "margin": 0.2,
            "need_logs": True,
            "miner": {"name": "n_hard_triplets", "args": {"n_positive": [2, 3]}},
        },
    }
    criterion = get_criterion_by_cfg(OmegaConf.create(cfg), label2category=LABEL2CATEGORY)  # dropped: not taken
    assert isinstance(criterion, TripletLossWithMiner) and isinstance(criterion.miner, NHardTripletsMiner)
    assert criterion.miner.positive_range == (2, 3)
    # taken by ArcFace
    arcface = get_criterion(
        "arcface", in_features=4, num_classes=4, smoothing_epsilon=0.1, label2category={0: 0, 1: 0, 2: 1, 3: 1}
    )
    assert isinstance(arcface, ArcFaceLoss) and arcface.categories.tolist() == [0, 0, 1, 1]
    miner = get_miner("miner_with_bank", bank_size_in_batches=2, miner={"name": "hard_triplets", "args": {}})
    assert isinstance(miner, MinerWithBank) and isinstance(miner.miner, HardTripletsMiner)
    # samplers: labels and label2category may always be given
    assert isinstance(
        get_sampler("balance", labels=LABELS, label2category=None, n_labels=2, n_instances=2), BalanceSampler
    )
    sampler = get_sampler(
        "category_balance", labels=LABELS, label2category=LABEL2CATEGORY, n_categories=1, n_labels=2, n_instances=2
    )
    assert isinstance(sampler, CategoryBalanceSampler)


def test_unknown_names_list_the_available_ones() -> None:
    with pytest.raises(RegistryKeyError, match=r"Unknown criterion 'triplets'. Available: \['arcface', .*pml\."):
        get_criterion("triplets", margin=0.1)
    with pytest.raises(KeyError, match=r"Unknown miner 'hard'. Available: \['all_triplets'"):
        get_miner_by_cfg({"name": "hard"})
    with pytest.raises(KeyError, match=r"Unknown sampler 'pk'. Available: \['balance', 'category_balance'"):
        get_sampler("pk", labels=LABELS)
    with pytest.raises(KeyError, match=r"Unknown optimizer 'adamm'"):
        get_optimizer("adamm", params=nn.Linear(2, 2).parameters())
    with pytest.raises(KeyError, match=r"Unknown scheduler 'cosine'. Available: \['cosine_annealing'"):
        get_scheduler("cosine", optimizer=torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1))
    with pytest.raises(
        KeyError,
        match=r"Unknown criterion 'pml.NoSuchLoss'. Available with the prefix 'pml.': \[.*'pml.TripletMarginLoss'",
    ):
        get_criterion("pml.NoSuchLoss")


def test_bad_configs_and_arguments() -> None:
    with pytest.raises(TypeError, match=r"Cannot build criterion 'triplet_with_miner' with arguments \['marign'\]"):
        get_criterion_by_cfg({"name": "triplet_with_miner", "args": {"marign": 0.1}})
    with pytest.raises(ValueError, match="needs a 'name' key"):
        get_miner_by_cfg({"args": {}})
    with pytest.raises(ValueError, match=r"only have the keys 'name' and 'args', got extra keys \['arg'\]"):
        get_miner_by_cfg({"name": "hard_triplets", "arg": {}})
    with pytest.raises(ValueError, match="needs label2category"):
        get_sampler_by_cfg(
            {"name": "category_balance", "args": {"n_categories": 1, "n_labels": 2, "n_instances": 2}}, labels=LABELS
        )
    with pytest.raises(ValueError, match="Optimizer 'adam' needs 'params'."):
        get_optimizer_by_cfg({"name": "adam", "args": {"lr": 0.1}})
    with pytest.raises(ValueError, match="Scheduler 'step' needs 'optimizer'."):
        get_scheduler_by_cfg({"name": "step", "args": {"step_size": 1}})


def test_pml_losses_and_miners_by_name() -> None:
    criterion = get_criterion_by_cfg(
        {
            "name": "pml.MultiSimilarityLoss",
            "args": {"alpha": 2.0, "miner": {"name": "pml.MultiSimilarityMiner", "args": {"epsilon": 0.1}}},
        },
        label2category=LABEL2CATEGORY,  # dropped: PML losses do not take it
    )
    assert isinstance(criterion, PMLCriterion) and isinstance(criterion.pml_miner, PMLMiner)
    assert criterion.loss.alpha == 2.0 and criterion.criterion_name == "multi_similarity"
    features = torch.randn(8, 4, requires_grad=True)
    criterion(features, torch.tensor(LABELS)).backward()
    assert torch.isfinite(features.grad).all()

    # an OML miner feeding a PML loss, and a PML miner inside our triplet loss
    mixed = get_criterion("pml.TripletMarginLoss", margin=0.1, miner={"name": "hard_triplets"})
    assert isinstance(mixed.pml_miner, HardTripletsMiner)
    assert mixed(features, LABELS).ndim == 0 and mixed.last_logs == {"n_triplets": 8.0}
    ours = get_criterion("triplet_with_miner", margin=0.1, miner={"name": "pml.BatchHardMiner"}, need_logs=True)
    assert ours(features, LABELS).ndim == 0 and "n_triplets" in ours.last_logs

    # classification losses keep their weights as parameters of the criterion
    arcface = get_criterion("pml.ArcFaceLoss", num_classes=4, embedding_size=4)
    assert sum(p.numel() for p in arcface.parameters()) == 16

    # wrappers with an inner loss and their own miner argument
    memory = get_criterion(
        "pml.CrossBatchMemory",
        loss={"name": "pml.ContrastiveLoss"},
        embedding_size=4,
        memory_size=16,
        miner={"name": "pml.MultiSimilarityMiner"},
    )
    assert memory.pml_miner is None and memory.loss.miner is not None
    assert memory(features, LABELS).ndim == 0


def test_schedulers_lambda_strings_and_plateau() -> None:
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=1.0)
    scheduler = get_scheduler("lambda", optimizer=optimizer, lr_lambda="lambda epoch: 0.5 ** epoch")
    optimizer.step()
    scheduler.step()
    assert scheduler.get_last_lr() == [0.5]
    assert parse_lr_lambda("min(1.0, (epoch + 1) / 10)")(4) == 0.5
    assert parse_lr_lambda("lambda e: 0.5 * (1 + cos(pi * e / 10))")(10) == pytest.approx(0.0)
    for bad in ("lambda e: e.__class__", "open('x')", "lambda: 1", "lambda e: 'a'", "lambda e: [e]"):
        with pytest.raises(ValueError):
            parse_lr_lambda(bad)

    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=1.0)
    plateau = get_scheduler("reduce_on_plateau", optimizer=optimizer, mode="max", factor=0.5, patience=0)
    assert plateau.get_last_lr() == [1.0]
    plateau.step(1.0)
    plateau.step(0.5)
    assert plateau.get_last_lr() == [0.5]


def test_optimizer_runtime_overrides_and_param_groups() -> None:
    model = nn.Linear(2, 2)
    groups = [{"params": [model.weight]}, {"params": [model.bias], "lr": 0.5}]
    optimizer = get_optimizer_by_cfg(OmegaConf.create({"name": "adam", "args": {"lr": 1.0e-5}}), groups, lr=0.1)
    assert [g["lr"] for g in optimizer.param_groups] == [0.1, 0.5]


def test_show_registry(capsys) -> None:
    shown = show_registry()
    out = capsys.readouterr().out
    for name in (
        "LOSSES_REGISTRY",
        "MINERS_REGISTRY",
        "SAMPLERS_REGISTRY",
        "OPTIMIZERS_REGISTRY",
        "SCHEDULERS_REGISTRY",
    ):
        assert name in shown and name in out
    assert "triplet_with_miner" in shown["LOSSES_REGISTRY"]


PML_TRIPLET_YAML = """
criterion:
  name: pml.TripletMarginLoss
  args:
    margin: 0.2
    distance: {name: pml.CosineSimilarity}
"""

# more nested blocks, added to the arguments of PML_TRIPLET_YAML
PML_NESTED_ARGS_YAML = """
reducer: {name: pml.MeanReducer}
embedding_regularizer:
  name: pml.LpRegularizer
  args: {p: 2}
miner:
  name: pml.TripletMarginMiner
  args: {margin: 0.2, type_of_triplets: semihard, distance: {name: pml.CosineSimilarity}}
"""


def separable_batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(4).repeat_interleave(4)
    return torch.randn(4, 8, generator=g)[labels] + 0.8 * torch.randn(16, 8, generator=g), labels


@pytest.mark.parametrize("as_dictconfig", [False, True])
def test_yaml_built_pml_triplet_loss_with_cosine_distance_trains(as_dictconfig: bool) -> None:
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.losses import TripletMarginLoss
    from pytorch_metric_learning.reducers import MeanReducer

    cfg = yaml.safe_load(PML_TRIPLET_YAML)["criterion"]
    criterion = get_criterion_by_cfg(OmegaConf.create(cfg) if as_dictconfig else cfg, label2category=LABEL2CATEGORY)
    assert isinstance(criterion.loss.distance, CosineSimilarity)

    torch.manual_seed(0)
    inputs, labels = separable_batch()
    model = nn.Linear(8, 8)
    assert torch.isclose(  # the numbers of the PML loss built by hand
        criterion(model(inputs), labels),
        TripletMarginLoss(margin=0.2, distance=CosineSimilarity())(model(inputs), labels),
    )
    mean_over_all = TripletMarginLoss(margin=0.2, distance=CosineSimilarity(), reducer=MeanReducer())
    before = mean_over_all(model(inputs), labels)
    # before, it failed at the first forward with "'dict' object is not callable"
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(20):
        optimizer.zero_grad()
        loss = criterion(model(inputs), labels)
        loss.backward()
        optimizer.step()
    assert before > 0.05 and mean_over_all(model(inputs), labels) < 0.25 * before


def test_yaml_nested_reducer_regularizer_and_miner_distance() -> None:
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.reducers import MeanReducer
    from pytorch_metric_learning.regularizers import LpRegularizer

    cfg = yaml.safe_load(PML_TRIPLET_YAML)["criterion"]
    cfg["args"].update(yaml.safe_load(PML_NESTED_ARGS_YAML))
    criterion = get_criterion_by_cfg(cfg)
    assert isinstance(criterion.loss.distance, CosineSimilarity)
    # with a regularizer PML spreads the given reducer over its parts (its own default is AvgNonZeroReducer)
    assert isinstance(criterion.loss.reducer.reducers["loss"], MeanReducer)
    assert isinstance(criterion.loss.embedding_regularizer, LpRegularizer)
    assert isinstance(criterion.pml_miner.miner.distance, CosineSimilarity)
    inputs, labels = separable_batch(1)
    features = nn.Linear(8, 8)(inputs)
    loss = criterion(features, labels)
    loss.backward()
    assert torch.isfinite(loss) and set(criterion.last_logs) == {"n_triplets"}


def test_pml_miner_with_a_nested_distance() -> None:
    from pytorch_metric_learning.distances import CosineSimilarity

    miner = get_miner_by_cfg({"name": "pml.BatchHardMiner", "args": {"distance": {"name": "pml.CosineSimilarity"}}})
    assert isinstance(miner, PMLMiner) and isinstance(miner.miner.distance, CosineSimilarity)
    assert len(miner.sample_ids(torch.randn(8, 4), LABELS)[0]) == 8


def test_bad_nested_pml_blocks_are_clear_errors() -> None:
    with pytest.raises(RegistryKeyError, match="blocks inside PML arguments must name PML classes"):
        get_criterion("pml.TripletMarginLoss", distance={"name": "cosine"})
    with pytest.raises(RegistryKeyError, match="Argument 'distance' of 'pml.TripletMarginLoss' names 'pml.Cosine'"):
        get_criterion("pml.TripletMarginLoss", distance={"name": "pml.Cosine"})
    with pytest.raises(
        TypeError, match=r"Cannot build distance 'pml.CosineSimilarity' for 'pml.TripletMarginLoss' with"
    ):
        get_criterion("pml.TripletMarginLoss", distance={"name": "pml.CosineSimilarity", "args": {"normalise": 1}})


@pytest.mark.parametrize("name", sorted(PML_LEFT_OUT))
def test_pml_losses_that_cannot_take_labels_are_left_out_with_a_reason(name: str) -> None:
    assert f"pml.{name}" not in PML_LOSSES.names()
    with pytest.raises(RegistryKeyError, match=f"'pml.{name}' is not available as an OML criterion: .+"):
        get_criterion(f"pml.{name}")


# the arguments without defaults of the listed PML losses
PML_REQUIRED = {"num_classes": 4, "embedding_size": 8, "descriptors_dim": 8, "Tn": 1}


def test_every_listed_pml_loss_trains_one_step() -> None:
    names = PML_LOSSES.names()
    assert len(names) > 30 and "pml.TripletMarginLoss" in names
    labels = torch.arange(4).repeat_interleave(4)
    for name in names:
        constructor = PML_LOSSES.resolve(name, "criterion")
        accepted = inspect.signature(constructor.__init__).parameters
        args = {k: v for k, v in PML_REQUIRED.items() if k in accepted}
        if "loss" in accepted:
            args["loss"] = {"name": "pml.ContrastiveLoss"}
        if name in ("pml.CosFaceLoss", "pml.SubCenterArcFaceLoss"):  # they take them through *args, **kwargs
            args.update(num_classes=4, embedding_size=8)
        if name == "pml.RankedListLoss":
            args["margin"] = 0.4
        criterion = get_criterion(name, **args)
        features = torch.randn(16, 8, generator=torch.Generator().manual_seed(0), requires_grad=True)
        loss = criterion(features, labels)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(features.grad).all(), name
