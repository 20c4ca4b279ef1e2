"""``lightning-mm chat``: talk to a trained model about images, its answers streamed as they are generated.

``lightning-mm chat MODEL --image PATH "question"`` prints one answer; without a question, questions are read from
stdin, one per line, as a multi-turn conversation (the chat template renders the whole history at every turn).
MODEL is a Lightning checkpoint (``.ckpt``), a folder written by ``lightning-mm export`` (either format), or any name
:func:`~lightning_mm.create_model` knows (a zoo name or ``hf:<id or folder>``; weights as ``pretrained`` loads them).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase, TextStreamer

from lightning_mm.commands.export import SPEC_FILE, load_exported, load_module
from lightning_mm.commands.registry import register_command
from lightning_mm.data.anyres_layout import anyres_layout
from lightning_mm.data.images import ASPECT_MODES, ImageLoadError, ImageProcessor
from lightning_mm.data.layout import ImageLayout, sample_layout
from lightning_mm.data.segments import encode_conversation
from lightning_mm.data.templates import IMAGE_PLACEHOLDER, ChatTemplate, Message, encode_segments, get_template
from lightning_mm.factory import create_model
from lightning_mm.models import VisionLanguageModel

__all__ = ["ChatModel", "ChatSession", "load_chat_model", "run"]

QUIT_WORDS = ("exit", "quit")


@dataclass
class ChatModel:
    """A network with what it takes to talk to it: tokenizer, chat template and image preprocessing.

    Attributes:
        network: The vision-language network (eval mode).
        tokenizer: Its tokenizer (with the image token).
        template: The chat template the model was trained with.
        image_data_config: timm data config of the vision tower.
        num_image_tokens: Tokens one image becomes.
        image_token_id: Id of the image placeholder token.
        stop_token_ids: Ids that end an answer (EOS and the template's end-of-turn token).
        layout: How images become tiles and prompt ids when their token count depends on their size (None: one
            resized image of ``num_image_tokens`` tokens).
    """

    network: VisionLanguageModel
    tokenizer: PreTrainedTokenizerBase
    template: ChatTemplate
    image_data_config: dict[str, Any]
    num_image_tokens: int
    image_token_id: int
    stop_token_ids: list[int] = field(default_factory=list)
    layout: ImageLayout | None = None

    def __post_init__(self) -> None:
        if not self.stop_token_ids:
            eot = self.template.end_of_turn(self.tokenizer)
            ids = [self.tokenizer.eos_token_id, self.tokenizer.convert_tokens_to_ids(eot)]
            self.stop_token_ids = list(dict.fromkeys(i for i in ids if i is not None))

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    @classmethod
    def from_module(cls, module: Any) -> ChatModel:
        """From a built :class:`~lightning_mm.MultimodalModule` (or subclass)."""
        return cls(
            network=module.network.eval(),
            tokenizer=module.tokenizer,
            template=get_template(module.spec.template),
            image_data_config=module.image_data_config,
            num_image_tokens=module.num_image_tokens,
            image_token_id=module.image_token_id,
            stop_token_ids=module.stop_token_ids,
            layout=module.image_layout,
        )

    @classmethod
    def from_export(cls, export_dir: str | Path) -> ChatModel:
        """From a folder written by ``lightning-mm export`` (merged weights, tokenizer, model spec)."""
        root = Path(export_dir)
        meta = json.loads((root / SPEC_FILE).read_text())
        network = load_exported(root).eval()
        config = network.vision.data_config()
        with torch.no_grad():  # one blank image through the tower and projector: tokens per image
            probe = torch.zeros(1, *config["input_size"], dtype=torch.uint8)  # (1, 3, H, W)
            num_image_tokens = int(network.encode_images(probe).shape[1])
        return cls(
            network=network,
            tokenizer=AutoTokenizer.from_pretrained(root / meta["llm"]),
            template=get_template(meta["spec"]["template"]),
            image_data_config=config,
            num_image_tokens=num_image_tokens,
            image_token_id=int(meta["image_token_id"]),
            layout=anyres_layout(network, config),  # tiling networks; None for fixed-size ones
        )


def load_chat_model(
    source: str, seed: int | None = None, module_class: str = "lightning_mm.MultimodalModule"
) -> ChatModel:
    """The :class:`ChatModel` of ``source``: the one place that decides how a model is read.

    Args:
        source: A Lightning checkpoint file; a folder with ``model_spec.json`` (``lightning-mm export``); a folder in
            transformers' LLaVA format (``config.json``: ``export --format hf``, a downloaded checkpoint), read as
            ``hf:<folder>``; otherwise a name for :func:`~lightning_mm.create_model`, built with ``pretrained=True``.
        seed: Seed of the training run, for an adapter-only checkpoint of a randomly initialised base.
        module_class: Dotted path of the LightningModule class of a checkpoint.
    """
    path = Path(source)
    if path.is_file():
        return ChatModel.from_module(load_module(path, module_class, seed=seed))
    if path.is_dir():
        if (path / SPEC_FILE).is_file():
            return ChatModel.from_export(path)
        if (path / "config.json").is_file():  # transformers' format (``export --format hf``, a downloaded LLaVA)
            return ChatModel.from_module(create_model(f"hf:{path}", pretrained=True).eval())
        raise ValueError(f"{path} is a folder without {SPEC_FILE} or config.json: not a model written by export.")
    if ":" not in source and (path.suffix == ".ckpt" or len(path.parts) > 1):  # a path, not a model name
        raise ValueError(f"{source}: no such checkpoint file or export folder.")
    return ChatModel.from_module(create_model(source, pretrained=True).eval())


class ChatSession:
    """A conversation with a :class:`ChatModel`: the history, the images, and one streamed answer per question.

    Args:
        model: The model.
        images: Image files of the conversation; they go into the first question (an ``<image>`` placeholder is put
            in front of it for each image, unless the question places them itself).
        image_aspect: How images are fitted to the tower's input (``pad``, ``resize``, ``crop``); not read for a model
            with an image layout (any-resolution tiling, image splitting), whose layout cuts the images.
        max_new_tokens: Longest answer, in tokens.
        temperature: 0: greedy decoding; above 0: sampling at this temperature.
        system_prompt: A system turn in front of the conversation.
    """

    def __init__(
        self,
        model: ChatModel,
        images: Sequence[str] = (),
        image_aspect: str = "pad",
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        system_prompt: str | None = None,
    ) -> None:
        self.model = model
        self.image_paths = list(images)
        self.image_sizes = self.tiles_per_image = self.image_prompts = None
        if model.layout is not None and self.image_paths:  # each image's own tiles and prompt ids
            layout = sample_layout(model.layout, len(self.image_paths))
            prepared = [layout.prepare(ImageProcessor.load(p)) for p in self.image_paths]
            self.pixel_values = torch.cat([im.tiles for im in prepared])  # (n_tiles, 3, H, W)
            self.image_sizes = torch.tensor([im.size for im in prepared], dtype=torch.long)  # (n, 2)
            self.tiles_per_image = torch.tensor([len(im.tiles) for im in prepared], dtype=torch.long)  # (n,)
            self.image_prompts = [layout.prompt_ids(im.size) for im in prepared]
        else:
            processor = ImageProcessor(model.image_data_config, image_aspect)
            self.pixel_values = processor.load_many(self.image_paths) if self.image_paths else None  # (n, 3, H, W)
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.messages: list[Message] = [{"role": "system", "content": system_prompt}] if system_prompt else []

    def _user_turn(self, question: str) -> str:
        if self.pixel_values is None or any(m["role"] == "user" for m in self.messages):
            return question
        placed = question.count(IMAGE_PLACEHOLDER)
        if placed == 0:
            return f"{IMAGE_PLACEHOLDER}\n" * len(self.image_paths) + question
        if placed != len(self.image_paths):
            raise ValueError(f"the question holds {placed} {IMAGE_PLACEHOLDER} for {len(self.image_paths)} image(s)")
        return question

    def prompt_ids(self, question: str) -> torch.Tensor:
        """(1, T) token ids of the whole conversation so far, ``question`` last, ending with the assistant header."""
        m = self.model
        messages = [*self.messages, {"role": "user", "content": self._user_turn(question)}]
        segments = m.template.render(messages, add_generation_prompt=True, tokenizer=m.tokenizer)
        if self.image_prompts is not None:
            ids = encode_conversation(segments, m.tokenizer, self.image_prompts).input_ids
        else:
            ids, _, _ = encode_segments(segments, m.tokenizer, m.image_token_id, m.num_image_tokens)
        return torch.tensor([ids], dtype=torch.long)  # (1, T)

    def ask(self, question: str, stream: TextIO | None = None) -> str:
        """Answer ``question`` (streamed to ``stream`` as it is generated, when given) and add the turn to the history.

        Returns:
            The answer's text.
        """
        m = self.model
        ids = self.prompt_ids(question).to(m.device)  # (1, T)
        streamer = _Streamer(m.tokenizer, stream) if stream is not None else None
        sampling = {"do_sample": True, "temperature": self.temperature} if self.temperature > 0 else {}
        pixels = self.pixel_values.to(m.device) if self.pixel_values is not None else None
        out = m.network.generate(
            ids,
            torch.ones_like(ids),
            pixels,
            max_new_tokens=self.max_new_tokens,
            image_sizes=self.image_sizes.to(m.device) if self.image_sizes is not None else None,  # (n, 2)
            tiles_per_image=self.tiles_per_image.to(m.device) if self.tiles_per_image is not None else None,  # (n,)
            eos_token_id=m.stop_token_ids,
            pad_token_id=m.tokenizer.pad_token_id,
            streamer=streamer,
            **sampling,
        )  # (1, T_new)
        answer = m.tokenizer.decode(out[0], skip_special_tokens=True).strip()
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


def _questions(stream: TextIO, interactive: bool) -> Iterable[str]:
    while True:
        if interactive:
            print(">>> ", end="", flush=True)
        line = stream.readline()
        if not line:
            return
        question = line.strip()
        if question.lower() in QUIT_WORDS:
            return
        if question:
            yield question


@register_command("chat", "answer questions about images with a trained model, streaming the answers")
def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lightning-mm chat",
        description="Answer a question about images with a trained model, streaming the answer as it is generated. "
        "Without a question, read questions from stdin (one per line; 'exit' or end of input stops) as one "
        "multi-turn conversation.",
    )
    parser.add_argument("model", help="checkpoint (.ckpt), folder written by `lightning-mm export`, or zoo name")
    parser.add_argument("question", nargs="?", default=None, help="the question (default: read questions from stdin)")
    parser.add_argument("--image", action="append", default=[], help="image file (repeat for several images)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="longest answer, in tokens")
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default); > 0: sampling")
    parser.add_argument("--image-aspect", choices=ASPECT_MODES, default="pad", help="how images fit the tower's input")
    parser.add_argument("--system-prompt", default=None, help="system turn in front of the conversation")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--seed", type=int, default=None, help="training seed, for an adapter-only checkpoint")
    parser.add_argument(
        "--module-class", default="lightning_mm.MultimodalModule", help="dotted path of a checkpoint's module class"
    )
    args = parser.parse_intermixed_args(argv)  # the question may follow the options
    try:
        model = load_chat_model(args.model, seed=args.seed, module_class=args.module_class)
        model.network.to(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        session = ChatSession(
            model, args.image, args.image_aspect, args.max_new_tokens, args.temperature, args.system_prompt
        )
        if args.question is not None:
            session.ask(args.question, stream=sys.stdout)
            return 0
        for question in _questions(sys.stdin, interactive=sys.stdin.isatty()):
            session.ask(question, stream=sys.stdout)
    except (ValueError, ImageLoadError) as err:
        print(f"lightning-mm chat: error: {err}", file=sys.stderr)
        return 2
    return 0
