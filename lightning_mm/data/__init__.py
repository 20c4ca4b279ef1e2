"""Data: sources (LLaVA files, Hugging Face datasets, mixtures), chat templates, images, collation, sampling,
the built-in synthetic task, datamodules."""

from lightning_mm.data.chat_formats import ChatFormat
from lightning_mm.data.collate import EMPTY_KEY, SKIPPED_KEY, VLMCollator
from lightning_mm.data.contract import DataContract
from lightning_mm.data.datamodule import VLMDataModule
from lightning_mm.data.hf_datamodule import HFDataModule, open_source
from lightning_mm.data.images import ASPECT_MODES, ImageLoadError, ImageProcessor
from lightning_mm.data.layout import FixedLayout, ImageLayout, PreparedImage
from lightning_mm.data.llava import LlavaDataset, SampleDropped
from lightning_mm.data.llava_datamodule import LlavaDataModule
from lightning_mm.data.llava_records import BadSampleError, parse_record, read_records
from lightning_mm.data.plans import BatchPlanSampler, PlanDataset
from lightning_mm.data.resumable import ResumableDataLoader, ShuffleSampler
from lightning_mm.data.sampler import LengthGroupedSampler
from lightning_mm.data.sources import DataSource, HFSource, LlavaJsonSource
from lightning_mm.data.synthetic import SyntheticVQADataModule, SyntheticVQADataset, build_synthetic_tokenizer
from lightning_mm.data.templates import (
    IGNORE_INDEX,
    ChatTemplate,
    Segment,
    encode_conversation,
    encode_segments,
    get_template,
    list_templates,
    register_template,
)
from lightning_mm.data.tokenizer import build_word_tokenizer, decode_prompt

__all__ = [
    "ASPECT_MODES",
    "EMPTY_KEY",
    "IGNORE_INDEX",
    "BadSampleError",
    "BatchPlanSampler",
    "ChatFormat",
    "ChatTemplate",
    "DataSource",
    "DataContract",
    "FixedLayout",
    "HFDataModule",
    "HFSource",
    "ImageLayout",
    "ImageLoadError",
    "ImageProcessor",
    "LengthGroupedSampler",
    "LlavaDataModule",
    "LlavaDataset",
    "LlavaJsonSource",
    "PlanDataset",
    "PreparedImage",
    "ResumableDataLoader",
    "SKIPPED_KEY",
    "SampleDropped",
    "Segment",
    "ShuffleSampler",
    "SyntheticVQADataModule",
    "SyntheticVQADataset",
    "VLMCollator",
    "VLMDataModule",
    "build_synthetic_tokenizer",
    "build_word_tokenizer",
    "decode_prompt",
    "encode_conversation",
    "encode_segments",
    "get_template",
    "list_templates",
    "open_source",
    "parse_record",
    "read_records",
    "register_template",
]
