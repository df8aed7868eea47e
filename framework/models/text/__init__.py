"""Text encoders (framework/models/text/base.py: the protocol) and the official T5 embedding
pickle format. `framework.models.text.T5TextEncoder` keeps its old import path."""

from framework.models.text.base import TextEncoder, build_text_encoder, fit_length
from framework.models.text.t5 import (
    DEFAULT_HUB_ID,
    DOWNLOAD_HINT,
    MAX_LENGTH,
    T5TextEncoder,
    default_local_dir,
    download_t5,
    embedding_to_pickle,
    resolve_t5_dir,
)

__all__ = [
    "DEFAULT_HUB_ID",
    "DOWNLOAD_HINT",
    "MAX_LENGTH",
    "T5TextEncoder",
    "TextEncoder",
    "build_text_encoder",
    "default_local_dir",
    "download_t5",
    "embedding_to_pickle",
    "fit_length",
    "resolve_t5_dir",
]
