"""Every recipe of ``pipelines/{cub,cars,sop,inshop}`` runs end to end, as its README tells a user to run it.

A miniature copy of each raw layout is built; then every ``oml ...`` command of the shell blocks of the
recipe's README runs in order (convert, train, validate the checkpoint it wrote, resume, the papers'
protocol, the STIR re-ranker of SOP and InShop), with the real configs (vits16, 224 px, GPU) shrunk by
command-line overrides only (a tiny random timm model, 32 px, one epoch, CPU). The runs go through
``oml.cli.main``, the function of the console script.
"""

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

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
    images: str  # a folder of the miniature layout for `oml predict`

    def config(self, kind: str) -> str:
        return str(PIPELINES / self.dataset / f"{kind}_{self.dataset}.yaml")

    def size(self, block: str) -> List[str]:
        crop = [f"{block}.args.crop_size=32"] if self.hypvit and block != "transforms_train" else []
        return [f"{block}.args.im_size=32", *crop]

    def shrink(self, command: str, config: str) -> List[str]:
        """The overrides that make a command of this recipe tiny (the README's own arguments stay)."""
        sampler = ["sampler.args.n_labels=2", "sampler.args.n_instances=2"]
        if command == "train":
            categories = ["sampler.args.n_categories=2"] if self.categories else []
            sizes = [*self.size("transforms_train"), *self.size("transforms_val")]
            return [*CPU, *QUIET, *TINY, "extractor.args.weights=null", *sizes, *sampler, *categories, "bs_val=16"]
        if command == "train-postprocessor":
            siamese = [f"pairwise_model.args.{o}" for o in TINY]
            sizes = [*self.size("transforms_extraction"), *self.size("transforms_train")]
            tiny = ["postprocessor.args.use_fp16=False", "batch_size_inference=16"]
            return [*CPU, *QUIET, *TINY, *siamese, *sizes, *sampler, *tiny]
        if command == "validate" and "postprocessor" in config:
            siamese = [f"postprocessor.args.pairwise_model.args.{o}" for o in TINY]
            return [*CPU, *TINY, *siamese, *self.size("transforms_val"), "bs_val=16"]
        if command == "validate":
            return [*CPU, *TINY, *self.size("transforms_val"), "bs_val=16"]
        return []


RECIPES = [
    Recipe("cub", hypvit=False, categories=False, images="images"),
    Recipe("cars", hypvit=False, categories=False, images="cars_test"),
    Recipe("sop", hypvit=True, categories=True, images="chair_final"),
    Recipe("inshop", hypvit=True, categories=True, images="img/MEN"),
]


def readme_commands(dataset: str) -> List[List[str]]:
    """The arguments of every ``oml`` command in the shell blocks of a recipe's README, in order."""
    text = (PIPELINES / dataset / "README.md").read_text()
    blocks = re.findall(r"```shell\n(.*?)```", text, flags=re.DOTALL)
    lines = [line.strip() for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return [shlex.split(line)[1:] for line in lines if line.startswith("oml ")]


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


def localise(args: List[str], runs: List[Path]) -> List[str]:
    """The README's arguments with ``<run>`` replaced by the latest run folder under that path."""
    fixed = []
    for arg in args:
        if "<run>" in arg:
            parent = Path(arg.split("=", 1)[-1].split("<run>")[0])
            run = next(r for r in reversed(runs) if r.parent == parent)
            arg = arg.replace(f"{parent.as_posix()}/<run>", run.as_posix())
        fixed.append(arg)
    return fixed


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r.dataset)
def test_readme_commands_run_end_to_end(
    recipe: Recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pipelines").symlink_to(PIPELINES)  # the READMEs' commands run from the repository root
    commands = readme_commands(recipe.dataset)
    assert [c[0] for c in commands[:3]] == ["convert", "train", "validate"], "the README starts with what trains"
    raw_root = Path(commands[0][2])  # where the README expects the data, e.g. data/CUB_200_2011
    MAKERS[recipe.dataset](raw_root)

    runs: List[Path] = []  # run folders of train / train-postprocessor, in order
    scores: Dict[str, float] = {}  # the last CMC@1 logged by each kind of training
    for i, args in enumerate(commands):
        command, config = args[0], args[1]
        extra = ["--quiet"] if command == "convert" else recipe.shrink(command, config)
        if command in ("train", "train-postprocessor"):
            resumed = any(a.startswith("ckpt_path=") for a in args)
            extra += [f"logs_folder=run{i}", f"max_epochs={2 if resumed else 1}", "valid_period=1"]
        output = run_oml([*localise(args, runs), *extra], capsys)

        if command == "convert":
            assert "wrote" in output and "protocol" in output
        elif command in ("train", "train-postprocessor"):
            run = only(list(Path("logs").glob(f"*/run{i}")))
            assert (run / "checkpoints" / "best.ckpt").is_file()
            runs.append(run)
            scores[command] = printed_cmc1(output)
        else:
            # the validation config loads the very weights that training scored last
            trained = scores["train-postprocessor" if "postprocessor" in config else "train"]
            assert printed_cmc1(output) == pytest.approx(trained, abs=1e-4), " ".join(args)

    assert ("train-postprocessor" in scores) == (recipe.dataset in ("sop", "inshop")), "STIR for SOP and InShop"
    run_predict(recipe, raw_root, runs[0] / "checkpoints" / "best.ckpt", tmp_path, capsys)


def run_predict(recipe: Recipe, root: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
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


def only(paths: List[Path]) -> Path:
    assert len(paths) == 1, paths
    return paths[0]


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

    from oml.models.vit_dino.extractor import ViTExtractor

    def load(name: str) -> dict:  # as Hydra reads it, interpolations left as they are
        return OmegaConf.to_container(OmegaConf.load(PIPELINES / dataset / name), resolve=False)

    train = load(f"train_{dataset}.yaml")
    for key, value in {**COMMON, **PUBLISHED[dataset]}.items():
        assert lookup(train, key) == value, key
    for kind in ("val", "predict"):
        cfg = load(f"{kind}_{dataset}.yaml")
        assert cfg["extractor"]["args"]["weights"] == f"vits16_{dataset}", "validation loads the zoo model by name"
        assert f"vits16_{dataset}" in ViTExtractor.pretrained_models
        assert cfg["extractor"]["args"]["normalise_features"] == train["extractor"]["args"]["normalise_features"]
        block = cfg["transforms_val" if kind == "val" else "transforms_predict"]
        assert block == train["transforms_val"]
    if dataset in ("sop", "inshop"):
        stir = load(f"train_postprocessor_{dataset}.yaml")
        for key, value in STIR.items():
            assert lookup(stir, key) == value, key
