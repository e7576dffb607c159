"""Names, keys, paths and constants shared by the whole package (OML 0.4.4 contract)."""

import os
import platform
import tempfile
from pathlib import Path
from typing import Any, Mapping, Tuple


def get_cache_folder() -> Path:
    """Return the folder where ``oml`` keeps checkpoints and the mock dataset.

    Linux: ``$XDG_CACHE_HOME/oml`` or ``~/.cache/oml``; macOS: ``~/Library/Caches/oml``;
    Windows: ``~/.cache/oml``. ``$OML_CACHE_DIR`` overrides all of them (not in OML 0.4.4:
    useful on shared machines and in tests).
    """
    if override := os.environ.get("OML_CACHE_DIR"):
        return Path(override)
    system = platform.system()
    if system == "Linux":
        xdg = os.environ.get("XDG_CACHE_HOME")
        return Path(xdg) / "oml" if xdg else Path.home() / ".cache" / "oml"
    if system == "Darwin":
        return Path.home() / "Library" / "Caches" / "oml"
    if system == "Windows":
        return Path.home() / ".cache" / "oml"
    raise ValueError(f"Unsupported platform {system!r}: cannot choose a cache folder for oml.")


PROJECT_ROOT = Path(__file__).parent.parent
CACHE_PATH = get_cache_folder()
TMP_PATH = Path(tempfile.gettempdir())
DOTENV_PATH = PROJECT_ROOT / ".env"
CONFIGS_PATH = Path(__file__).parent / "configs"
CKPT_SAVE_ROOT = CACHE_PATH / "torch" / "checkpoints"
MOCK_DATASET_PATH = CACHE_PATH / "mock_dataset"

LOG_IMAGE_FOLDER = "image_logs"
LOG_TOPK_ROWS_PER_METRIC = 5
LOG_TOPK_IMAGES_PER_ROW = 5
N_GT_SHOW_EMBEDDING_METRICS = 2

STORAGE_URL = "https://oml.daloroserver.com"
STORAGE_CKPTS = STORAGE_URL + "/download/checkpoints"
REQUESTS_TIMEOUT = 120.0

TColor = Tuple[int, int, int]
RED: TColor = (255, 0, 0)
GREEN: TColor = (0, 200, 0)
BLUE: TColor = (0, 0, 255)
GRAY: TColor = (120, 120, 120)
PAD_COLOR: TColor = (255, 255, 255)

# a plain dict or an OmegaConf DictConfig (which is a Mapping); omegaconf stays an optional dependency
TCfg = Mapping[str, Any]

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
MEAN_CLIP = (0.48145466, 0.4578275, 0.40821073)
STD_CLIP = (0.26862954, 0.26130258, 0.27577711)
TNormParam = Tuple[float, float, float]

CROP_KEY = "crop"

# dataframe columns
LABELS_COLUMN = "label"
PATHS_COLUMN = "path"
SPLIT_COLUMN = "split"
IS_QUERY_COLUMN = "is_query"
IS_GALLERY_COLUMN = "is_gallery"
CATEGORIES_COLUMN = "category"
SEQUENCE_COLUMN = "sequence"  # optional: items of the query's sequence are not retrieved for it (OML 4.0)
X1_COLUMN = "x_1"
X2_COLUMN = "x_2"
Y1_COLUMN = "y_1"
Y2_COLUMN = "y_2"

OBLIGATORY_COLUMNS = [LABELS_COLUMN, PATHS_COLUMN, SPLIT_COLUMN, IS_QUERY_COLUMN, IS_GALLERY_COLUMN]
BBOXES_COLUMNS = [X1_COLUMN, X2_COLUMN, Y1_COLUMN, Y2_COLUMN]

# batch keys
OVERALL_CATEGORIES_KEY = "OVERALL"
INPUT_TENSORS_KEY = "input_tensors"
LABELS_KEY = "labels"
IS_QUERY_KEY = "is_query"
IS_GALLERY_KEY = "is_gallery"
EMBEDDINGS_KEY = "embeddings"
CATEGORIES_KEY = "categories"
SEQUENCE_KEY = "sequence"
PATHS_KEY = "paths"
X1_KEY = "x1"
X2_KEY = "x2"
Y1_KEY = "y1"
Y2_KEY = "y2"
INDEX_KEY = "idx"

PAIR_1ST_KEY = "input_tensors_1"
PAIR_2ND_KEY = "input_tensors_2"

IMAGE_EXTENSIONS = ["jpg", "jpeg", "JPG", "JPEG", "png"]

HYDRA_VERSION = "1.1"
