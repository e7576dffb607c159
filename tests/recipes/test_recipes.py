"""Every recipe of ``pipelines/{cub,cars,sop,inshop}`` runs end to end through the ``oml`` command.

A miniature copy of each raw layout is built, converted with ``oml convert``, then the recipe's real
configs (vits16, 224 px, GPU) are run shrunk by command-line overrides only (a tiny random timm model, 32 px,
one epoch, CPU): train, then validate the checkpoint it wrote, then predict; SOP and InShop also train and
validate the STIR re-ranker. The runs go through ``oml.cli.main``, the function of the console script.
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import List

import pytest

from oml.cli import main
from oml.const import PROJECT_ROOT
from tests.datasets.converters.layouts import MAKERS

PIPELINES = PROJECT_ROOT / "pipelines"
CPU = ["accelerator=cpu", "devices=1", "precision=32", "num_workers=0"]
QUIET = [
    "+lightning_trainer_extra_args.enable_progress_bar=False",
    "+lightning_trainer_extra_args.enable_model_summary=False",
]
TINY = ["extractor.name=timm", "extractor.args.arch=resnet10t"]


@dataclass(frozen=True)
class Recipe:
    dataset: str
    hypvit: bool  # torchvision Hyp-ViT transforms (im_size + crop_size) instead of albumentations (im_size)
    categories: bool  # a category_balance sampler
    stir: bool  # has the STIR re-ranking configs
    images: str  # a folder of the miniature layout for `oml predict`

    def config(self, kind: str) -> str:
        return str(PIPELINES / self.dataset / f"{kind}_{self.dataset}.yaml")

    def size(self, block: str) -> List[str]:
        crop = [f"{block}.args.crop_size=32"] if self.hypvit and block != "transforms_train" else []
        return [f"{block}.args.im_size=32", *crop]

    def sampler(self) -> List[str]:
        categories = ["sampler.args.n_categories=2"] if self.categories else []
        return ["sampler.args.n_labels=2", "sampler.args.n_instances=2", *categories]


RECIPES = [
    Recipe("cub", hypvit=False, categories=False, stir=False, images="images"),
    Recipe("cars", hypvit=False, categories=False, stir=False, images="cars_test"),
    Recipe("sop", hypvit=True, categories=True, stir=True, images="chair_final"),
    Recipe("inshop", hypvit=True, categories=True, stir=True, images="img/MEN"),
]


def run_oml(args: List[str], capsys: pytest.CaptureFixture) -> str:
    """``oml ARGS`` in this process; returns what it printed (and fails the test on a non-zero exit)."""
    try:
        main(args)
    except SystemExit as e:
        captured = capsys.readouterr()
        pytest.fail(f"oml {' '.join(args[:2])} exited with {e.code}:\n{(captured.out + captured.err)[-3000:]}")
    captured = capsys.readouterr()
    return captured.out + captured.err


def printed_cmc1(output: str) -> float:
    """The last CMC@1 that the metrics printout (``'cmc': {1: tensor(0.5000)}``) shows."""
    values = re.findall(r"'cmc': \{1: tensor\(([0-9.]+)\)", output)
    assert values, f"no CMC@1 in the output:\n{output[-2000:]}"
    return float(values[-1])


def only(paths: List[Path]) -> Path:
    assert len(paths) == 1, paths
    return paths[0]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r.dataset)
def test_recipe_runs_end_to_end(
    recipe: Recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "raw"
    MAKERS[recipe.dataset](root)
    summary = run_oml(["convert", recipe.dataset, str(root), "--quiet"], capsys)
    assert "wrote" in summary and "df.csv" in summary

    data = [f"dataset_root={root}", *CPU]
    output = run_oml(
        [
            "train",
            recipe.config("train"),
            *data,
            *QUIET,
            *TINY,
            "extractor.args.weights=null",
            *recipe.size("transforms_train"),
            *recipe.size("transforms_val"),
            *recipe.sampler(),
            "logs_root=logs",
            "max_epochs=1",
            "valid_period=1",
            "bs_val=16",
        ],
        capsys,
    )
    trained_cmc1 = printed_cmc1(output)
    checkpoint = only(list((tmp_path / "logs").glob("*/checkpoints/best.ckpt")))

    output = run_oml(
        [
            "validate",
            recipe.config("val"),
            *data,
            *TINY,
            f"extractor.args.weights={checkpoint.relative_to(tmp_path)}",  # relative to where oml starts
            *recipe.size("transforms_val"),
            "bs_val=16",
        ],
        capsys,
    )
    # the validation config loads the very weights that training scored
    assert printed_cmc1(output) == pytest.approx(trained_cmc1, abs=1e-4)
    assert re.search(r"'precision': \{5: tensor", output), "validation adds precision@5"

    run_oml(
        [
            "predict",
            recipe.config("predict"),
            *CPU,
            *TINY,
            f"extractor.args.weights={checkpoint}",
            *recipe.size("transforms_predict"),
            f"data_dir={root / recipe.images}",
            f"save_dir={tmp_path / 'predictions'}",
            "bs=16",
        ],
        capsys,
    )
    predictions = json.loads((tmp_path / "predictions" / "predictions.json").read_text())
    assert len(predictions) == sum(p.is_file() for p in (root / recipe.images).rglob("*")) > 0
    assert len({len(embedding) for embedding in predictions.values()}) == 1

    if recipe.stir:
        check_stir(recipe, root, checkpoint, tmp_path, capsys)


def check_stir(recipe: Recipe, root: Path, extractor: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Train the STIR re-ranker on top of the extractor just trained, then validate the two together."""
    tiny_siamese = ["extractor.name=timm", "extractor.args.arch=resnet10t"]
    output = run_oml(
        [
            "train-postprocessor",
            recipe.config("train_postprocessor"),
            f"dataset_root={root}",
            *CPU,
            *QUIET,
            *TINY,
            *[f"pairwise_model.args.{o}" for o in tiny_siamese],
            f"extractor_weights={extractor}",
            *recipe.size("transforms_extraction"),
            *recipe.size("transforms_train"),
            "sampler.args.n_labels=2",
            "sampler.args.n_instances=2",
            "postprocessor.args.use_fp16=False",
            "logs_root=stir_logs",
            "batch_size_inference=16",
            "max_epochs=1",
            "valid_period=1",
        ],
        capsys,
    )
    reranked_cmc1 = printed_cmc1(output)
    reranker = only(list((tmp_path / "stir_logs").glob("*/checkpoints/best.ckpt")))
    assert list(root.glob("embeddings_*.pkl")), "the extractor's embeddings are cached in the dataset root"

    output = run_oml(
        [
            "validate",
            recipe.config("val_postprocessor"),
            f"dataset_root={root}",
            *CPU,
            *TINY,
            *[f"postprocessor.args.pairwise_model.args.{o}" for o in tiny_siamese],
            f"extractor_weights={extractor}",
            f"postprocessor_weights={reranker}",
            *recipe.size("transforms_val"),
            "bs_val=16",
        ],
        capsys,
    )
    assert printed_cmc1(output) == pytest.approx(reranked_cmc1, abs=1e-4)


def test_stir_validation_needs_the_reranker_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(["validate", str(PIPELINES / "sop" / "val_postprocessor_sop.yaml"), *CPU])
    captured = capsys.readouterr()
    assert "postprocessor_weights" in captured.out + captured.err


# OML 0.4.4's hyper-parameters of the zoo runs (shared/spec/recipes.md, section 3)
PUBLISHED = {
    "cub": {
        "dataframe_name": "df_with_bboxes.csv",
        "transforms_train.name": "augs_albu",
        "transforms_val.name": "norm_resize_albu",
        "sampler.name": "balance",
        "sampler.args.n_labels": 8,
        "sampler.args.n_instances": 4,
        "criterion.args.miner.name": "triplets_with_memory",
        "criterion.args.miner.args.bank_size_in_batches": 50,
        "criterion.args.miner.args.tri_expand_k": 3,
        "criterion.args.margin": None,
        "extractor.args.normalise_features": False,
        "optimizer.name": "adam",
        "precision": 32,
        "valid_period": 5,
        "bs_val": 256,
    },
    "cars": {
        "dataframe_name": "df_with_bboxes.csv",
        "transforms_train.name": "augs_albu",
        "transforms_val.name": "norm_resize_albu",
        "sampler.name": "balance",
        "sampler.args.n_labels": 20,
        "sampler.args.n_instances": 10,
        "criterion.args.miner.name": "all_triplets",
        "criterion.args.margin": None,
        "extractor.args.normalise_features": False,
        "optimizer.name": "adam",
        "precision": 32,
        "valid_period": 10,
        "bs_val": 512,
    },
    "sop": {
        "dataframe_name": "df.csv",
        "transforms_train.name": "augs_hypvit_torch",
        "transforms_val.name": "norm_resize_hypvit_torch",
        "transforms_val.args.crop_size": 224,
        "sampler.name": "category_balance",
        "sampler.args.n_labels": 32,
        "sampler.args.n_instances": 6,
        "sampler.args.n_categories": 3,
        "sampler.args.resample_labels": True,
        "sampler.args.weight_categories": True,
        "criterion.args.miner.name": "hard_triplets",
        "criterion.args.margin": 0.15,
        "extractor.args.normalise_features": True,
        "optimizer.name": "adam",
        "precision": 16,
        "valid_period": 1,
        "bs_val": 256,
        "metric_args.fmr_vals": [],
    },
    "inshop": {
        "dataframe_name": "df.csv",
        "transforms_train.name": "augs_hypvit_torch",
        "transforms_val.name": "norm_resize_hypvit_torch",
        "transforms_val.args.crop_size": 224,
        "sampler.name": "category_balance",
        "sampler.args.n_labels": 30,
        "sampler.args.n_instances": 4,
        "sampler.args.n_categories": 5,
        "sampler.args.resample_labels": True,
        "sampler.args.weight_categories": True,
        "criterion.args.miner.name": "hard_triplets",
        "criterion.args.margin": None,
        "extractor.args.normalise_features": False,
        "optimizer.name": "adamw",
        "precision": 16,
        "valid_period": 1,
        "bs_val": 256,
        "metric_args.fmr_vals": [],
    },
}
COMMON = {
    "extractor.name": "vit",
    "extractor.args.arch": "vits16",
    "extractor.args.weights": "vits16_dino",
    "transforms_train.args.im_size": 224,
    "transforms_val.args.im_size": 224,
    "criterion.name": "triplet_with_miner",
    "optimizer.args.lr": 1e-5,
    "scheduling": None,
    "metric_for_checkpointing": "OVERALL/cmc/1",
    "accelerator": "gpu",
}
STIR = {
    "pairwise_model.name": "concat_siamese",
    "pairwise_model.args.mlp_hidden_dims": [192],
    "pairwise_model.args.extractor.args.arch": "vits16",
    "pairwise_model.args.extractor.args.weights": "${extractor_weights}",
    "sampler.name": "balance",
    "sampler.args.n_labels": 30,
    "sampler.args.n_instances": 4,
    "optimizer.name": "adam",
    "optimizer.args.lr": 2e-3,
    "freeze_n_epochs": 3,
    "scheduling.scheduler.name": "multi_step",
    "scheduling.scheduler.args.gamma": 5e-3,
    "scheduling.scheduler.args.milestones": ["${freeze_n_epochs}"],
    "precision": 16,
    "transforms_train.name": "augs_hypvit_torch",
    "transforms_train.args.min_scale": 0.8,
    "postprocessor.name": "pairwise_images",
    "postprocessor.args.top_n": 5,
}


def lookup(cfg: dict, dotted: str) -> object:
    for key in dotted.split("."):
        cfg = cfg[key]
    return cfg


@pytest.mark.parametrize("dataset", sorted(PUBLISHED))
def test_recipes_keep_the_published_hyper_parameters(dataset: str) -> None:
    """The files stay the real recipes: only the tests' overrides shrink them."""
    from omegaconf import OmegaConf

    def load(name: str) -> dict:  # as Hydra reads it, interpolations left as they are
        return OmegaConf.to_container(OmegaConf.load(PIPELINES / dataset / name), resolve=False)

    train = load(f"train_{dataset}.yaml")
    for key, value in {**COMMON, **PUBLISHED[dataset]}.items():
        assert lookup(train, key) == value, key
    for kind in ("val", "predict"):
        cfg = load(f"{kind}_{dataset}.yaml")
        assert cfg["extractor"]["args"]["weights"] == f"vits16_{dataset}", "validation loads the zoo model by name"
        assert cfg["extractor"]["args"]["normalise_features"] == train["extractor"]["args"]["normalise_features"]
        block = cfg["transforms_val" if kind == "val" else "transforms_predict"]
        assert block == train["transforms_val"]
    if dataset in ("sop", "inshop"):
        stir = load(f"train_postprocessor_{dataset}.yaml")
        for key, value in STIR.items():
            assert lookup(stir, key) == value, key
