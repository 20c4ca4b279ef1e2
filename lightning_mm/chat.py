"""Talk to a trained model about images: :class:`ChatModel` (a network and its data contract) and
:class:`ChatSession` (the conversation, one streamed answer per question).

A model is read from a Lightning checkpoint, a folder written by ``lightning-mm export`` (either format), or a name
:func:`~lightning_mm.create_model` knows; in every case images are prepared and prompts rendered through the model's
:class:`~lightning_mm.data.DataContract`, as in training (the aspect mode, layout and template it was trained with).

A zoo name is built with the weights its spec names (:func:`weight_sources`). Before anything is downloaded, the local
Hugging Face cache is checked: with ``HF_HUB_OFFLINE=1`` a missing source is a :class:`DownloadNeeded` error naming
every one; an entry that names no weights (the ``tiny`` models) builds offline with a random initialisation.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import timm
import torch
from huggingface_hub import snapshot_download
from transformers import AutoTokenizer, PreTrainedTokenizerBase, TextStreamer

from lightning_mm.checkpoint.load import load_module
from lightning_mm.checkpoint.read import is_url
from lightning_mm.data.contract import DataContract
from lightning_mm.data.images import ImageProcessor
from lightning_mm.data.layout import sample_layout
from lightning_mm.data.segments import encode_conversation
from lightning_mm.data.templates import IMAGE_PLACEHOLDER, Message
from lightning_mm.factory import create_model
from lightning_mm.interop.parts import SPEC_FILE, exported_spec, load_exported, read_export_meta
from lightning_mm.models import VisionLanguageModel
from lightning_mm.zoo import ModelSpec, get_spec
from lightning_mm.zoo.contract import data_contract
from lightning_mm.zoo.spec import BUILTIN_TOKENIZERS

__all__ = ["ChatModel", "ChatSession", "DownloadNeeded", "load_chat_model", "missing_downloads", "weight_sources"]

log = logging.getLogger(__name__)

HF_PREFIX = "hf:"


class DownloadNeeded(ValueError):
    """A model's weights or tokenizer are neither local nor in the Hugging Face cache, and downloads are off (or
    failed). The message names each missing source."""


@dataclass
class ChatModel:
    """A network with what it takes to talk to it.

    Attributes:
        network: The vision-language network (eval mode).
        contract: Its data contract: tokenizer, chat template, image layout and preprocessing, stop ids.
    """

    network: VisionLanguageModel
    contract: DataContract

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    @classmethod
    def from_module(cls, module: Any) -> ChatModel:
        """From a built :class:`~lightning_mm.MultimodalModule` (or subclass)."""
        return cls(network=module.network.eval(), contract=module.data_contract)

    @classmethod
    def from_export(cls, export_dir: str | Path) -> ChatModel:
        """From a folder written by ``lightning-mm export`` (merged weights, tokenizer, model spec, image aspect)."""
        root = Path(export_dir)
        meta = read_export_meta(root)
        spec = exported_spec(root)
        tokenizer = AutoTokenizer.from_pretrained(root / meta["llm"])
        contract = data_contract(spec, tokenizer, meta.get("image_aspect", "pad"))
        return cls(network=load_exported(root), contract=contract)


def _timm_source(vision_model: str) -> str | None:
    """Hub repository (or URL) of a timm architecture's pretrained weights; None when timm names none."""
    try:
        cfg = timm.models.get_pretrained_cfg(vision_model)
    except Exception:  # an unknown tag: the build reports it
        return None
    return None if cfg is None else (cfg.hf_hub_id or cfg.url or None)


def weight_sources(spec: ModelSpec) -> list[str]:
    """What building ``spec`` with ``pretrained=True`` reads: the whole-VLM checkpoint, else the vision tower's timm
    weights (tagged architectures) and the LM; the tokenizer and projector file; hub ids, paths or URLs, in order."""
    found = [spec.checkpoint] if spec.checkpoint else []
    if not spec.checkpoint:
        if "." in spec.vision_model:  # a pretrained tag (vit_large_patch14_clip_336.openai)
            found.append(_timm_source(spec.vision_model))
        found.append(spec.llm)
    tokenizer = spec.tokenizer or spec.llm
    found += [None if tokenizer in BUILTIN_TOKENIZERS else tokenizer, spec.projector_weights]
    return list(dict.fromkeys(s for s in found if s))


def _available(source: str) -> bool:
    if Path(source).exists():
        return True
    if "://" in source:  # a URL (timm, projector file): torch's hub cache is not checked
        return False
    try:
        snapshot_download(source, local_files_only=True)
    except Exception:  # not in the cache (or not a repository id at all)
        return False
    return True


def missing_downloads(spec: ModelSpec) -> list[str]:
    """The weight sources of ``spec`` (:func:`weight_sources`) that are neither local files nor in the HF cache."""
    return [s for s in weight_sources(spec) if not _available(s)]


def _download_error(name: str, missing: Sequence[str]) -> DownloadNeeded:
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    why = "downloads are off (HF_HUB_OFFLINE)" if offline else "they could not be downloaded"
    return DownloadNeeded(
        f"{name!r} needs {', '.join(missing)}, {'which is' if len(missing) == 1 else 'which are'} not in the local "
        f"Hugging Face cache, and {why}. Download "
        f"them once with network access (e.g. `huggingface-cli download {missing[0]}`), or chat with a trained "
        "checkpoint or an export folder instead; `lightning-mm zoo` lists the entries that need no download."
    )


def _zoo_module(source: str) -> Any:
    """The module of a zoo name or ``hf:`` name: downloads checked first, a spec without weights built as is."""
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if source.startswith(HF_PREFIX) and not Path(source.removeprefix(HF_PREFIX)).is_dir():
        repo = source.removeprefix(HF_PREFIX)
        if offline and not _available(repo):
            raise _download_error(source, [repo])
    spec = get_spec(source)  # an unknown name: an error with the closest names
    sources = weight_sources(spec)
    if not sources:
        log.warning("%s names no pretrained weights: its weights are a random initialisation.", source)
        return create_model(source).eval()
    missing = missing_downloads(spec)
    if missing and offline:
        raise _download_error(source, missing)
    try:
        return create_model(source, pretrained=True).eval()
    except OSError as err:  # the hub could not be reached (huggingface_hub and requests errors are OSErrors)
        raise _download_error(source, missing or sources) from err


def load_chat_model(
    source: str, seed: int | None = None, module_class: str = "lightning_mm.MultimodalModule"
) -> ChatModel:
    """The :class:`ChatModel` of ``source``: the one place that decides how a model is read.

    Args:
        source: A Lightning checkpoint file or its ``http(s)://`` URL (loaded weights-only); a folder with
            ``model_spec.json`` (``lightning-mm export``); a folder in transformers' format (``config.json``:
            ``export --format hf``, a downloaded checkpoint), read as ``hf:<folder>``; otherwise a name for
            :func:`~lightning_mm.create_model`, built with ``pretrained=True`` (a name without weights, such as
            ``tiny``, with a random initialisation).
        seed: Seed of the training run, for an adapter-only checkpoint of a randomly initialised base.
        module_class: Dotted path of the LightningModule class of a checkpoint.

    Raises:
        DownloadNeeded: for a name whose weights are not in the local cache while ``HF_HUB_OFFLINE`` is set, or
            whose download failed; it names every missing source.
    """
    path = Path(source)
    if path.is_file() or is_url(source):  # a checkpoint, loaded weights-only (a URL too)
        return ChatModel.from_module(load_module(source, module_class, seed=seed))
    if path.is_dir():
        if (path / SPEC_FILE).is_file():
            return ChatModel.from_export(path)
        if (path / "config.json").is_file():  # transformers' format (``export --format hf``, a downloaded model)
            return ChatModel.from_module(create_model(f"hf:{path}", pretrained=True).eval())
        raise ValueError(f"{path} is a folder without {SPEC_FILE} or config.json: not a model written by export.")
    if ":" not in source and (path.suffix == ".ckpt" or len(path.parts) > 1):  # a path, not a model name
        raise ValueError(f"{source}: no such checkpoint file or export folder.")
    return ChatModel.from_module(_zoo_module(source))


class ChatSession:
    """A conversation with a :class:`ChatModel`: the history, the images, and one streamed answer per question.

    Args:
        model: The model.
        images: Image files of the conversation; they go into the first question (an ``<image>`` placeholder is put
            in front of it for each image, unless the question places them itself). Each is prepared by the model's
            layout (its own tiles and prompt ids; one resized view with the model's ``image_aspect`` for a fixed-size
            model).
        max_new_tokens: Longest answer, in tokens.
        temperature: 0: greedy decoding; above 0: sampling at this temperature.
        system_prompt: A system turn in front of the conversation.
    """

    def __init__(
        self,
        model: ChatModel,
        images: Sequence[str] = (),
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        system_prompt: str | None = None,
    ) -> None:
        self.model = model
        self.image_paths = list(images)
        self.pixel_values = self.image_sizes = self.tiles_per_image = None
        self.image_prompts: list[list[int]] = []
        if self.image_paths:
            layout = sample_layout(model.contract.layout, len(self.image_paths))
            prepared = [layout.prepare(ImageProcessor.load(p)) for p in self.image_paths]
            self.pixel_values = torch.cat([im.tiles for im in prepared])  # (n_tiles, 3, H, W)
            self.image_sizes = torch.tensor([im.size for im in prepared], dtype=torch.long)  # (n, 2)
            self.tiles_per_image = torch.tensor([len(im.tiles) for im in prepared], dtype=torch.long)  # (n,)
            self.image_prompts = [layout.prompt_ids(im.size) for im in prepared]
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.messages: list[Message] = [{"role": "system", "content": system_prompt}] if system_prompt else []

    def _user_turn(self, question: str) -> str:
        if self.pixel_values is None or any(m["role"] == "user" for m in self.messages):
            return question
        placed = question.count(IMAGE_PLACEHOLDER)
        if placed == 0:  # as transformers' standard messages with the images first render (ChatTemplate.image_part)
            return self.model.contract.template.image_part * len(self.image_paths) + question
        if placed != len(self.image_paths):
            raise ValueError(f"the question holds {placed} {IMAGE_PLACEHOLDER} for {len(self.image_paths)} image(s)")
        return question

    def prompt_ids(self, question: str) -> torch.Tensor:
        """(1, T) token ids of the whole conversation so far, ``question`` last, ending with the assistant header."""
        c = self.model.contract
        messages = [*self.messages, {"role": "user", "content": self._user_turn(question)}]
        segments = c.template.render(messages, add_generation_prompt=True, tokenizer=c.tokenizer)
        ids = encode_conversation(segments, c.tokenizer, self.image_prompts).input_ids
        return torch.tensor([ids], dtype=torch.long)  # (1, T)

    def ask(self, question: str, stream: TextIO | None = None) -> str:
        """Answer ``question`` (streamed to ``stream`` as it is generated, when given) and add the turn to the history.

        Returns:
            The answer's text.
        """
        m, c = self.model, self.model.contract
        ids = self.prompt_ids(question).to(m.device)  # (1, T)
        streamer = _Streamer(c.tokenizer, stream) if stream is not None else None
        sampling = {"do_sample": True, "temperature": self.temperature} if self.temperature > 0 else {}
        on_device = [t.to(m.device) if t is not None else None for t in (self.pixel_values, self.image_sizes)]
        tiles = self.tiles_per_image.to(m.device) if self.tiles_per_image is not None else None  # (n,)
        out = m.network.generate(
            ids,
            torch.ones_like(ids),
            on_device[0],  # (n_tiles, 3, H, W)
            max_new_tokens=self.max_new_tokens,
            image_sizes=on_device[1],  # (n, 2)
            tiles_per_image=tiles,
            eos_token_id=c.stop_token_ids,
            pad_token_id=c.tokenizer.pad_token_id,
            streamer=streamer,
            **sampling,
        )  # (1, T_new)
        answer = c.tokenizer.decode(out[0], skip_special_tokens=True).strip()
        self.messages += [
            {"role": "user", "content": self._user_turn(question)},
            {"role": "assistant", "content": answer},
        ]
        return answer


class _Streamer(TextStreamer):
    """transformers' ``TextStreamer`` writing to a given stream (the generated tokens only, special tokens skipped)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stream: TextIO) -> None:
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.stream = stream

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        self.stream.write(text + ("\n" if stream_end else ""))
        self.stream.flush()
