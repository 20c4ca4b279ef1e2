"""Data: chat templates, collation, the built-in synthetic task, and datamodules."""

from lightning_mm.data.collate import VLMCollator
from lightning_mm.data.datamodule import VLMDataModule
from lightning_mm.data.synthetic import SyntheticVQADataModule, SyntheticVQADataset, build_synthetic_tokenizer
from lightning_mm.data.templates import IGNORE_INDEX, ChatTemplate, Segment, encode_segments, get_template
from lightning_mm.data.tokenizer import build_word_tokenizer

__all__ = [
    "IGNORE_INDEX",
    "ChatTemplate",
    "Segment",
    "SyntheticVQADataModule",
    "SyntheticVQADataset",
    "VLMCollator",
    "VLMDataModule",
    "build_synthetic_tokenizer",
    "build_word_tokenizer",
    "encode_segments",
    "get_template",
]
