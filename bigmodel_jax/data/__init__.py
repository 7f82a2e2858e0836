"""Data: text sources, tokenizers and the packed language-model input pipeline."""

from bigmodel_jax.data.eval_sample import sample_eval_batches
from bigmodel_jax.data.pipeline import make_lm_dataset
from bigmodel_jax.data.sources import (
    KNOWN_DATASETS,
    TextSource,
    bytes_per_token,
    iter_texts,
    load_source,
)
from bigmodel_jax.data.text_files import TextFiles, TextFilesConfig, make_config, prepare_builder
from bigmodel_jax.data.tokenizers import (
    TOKENIZER_NAMES,
    ByteTokenizer,
    HuggingFaceTokenizer,
    SentencePieceTokenizer,
    make_tokenizer,
)

__all__ = [
    "KNOWN_DATASETS",
    "TOKENIZER_NAMES",
    "ByteTokenizer",
    "HuggingFaceTokenizer",
    "SentencePieceTokenizer",
    "TextFiles",
    "TextFilesConfig",
    "TextSource",
    "bytes_per_token",
    "iter_texts",
    "load_source",
    "make_config",
    "make_lm_dataset",
    "make_tokenizer",
    "prepare_builder",
    "sample_eval_batches",
]
