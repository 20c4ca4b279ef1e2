"""``lightning-mm chat``: talk to a trained model about images, its answers streamed as they are generated.

``lightning-mm chat MODEL --image PATH "question"`` prints one answer; without a question, questions are read from
stdin, one per line, as a multi-turn conversation (the chat template renders the whole history at every turn).
MODEL is a Lightning checkpoint (``.ckpt``), a folder written by ``lightning-mm export`` (either format), or any name
:func:`~lightning_mm.create_model` knows (a zoo name or ``hf:<id or folder>``; weights as ``pretrained`` loads them).
Images are read as the model was trained to read them (:class:`~lightning_mm.chat.ChatSession`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from typing import TextIO

import torch

from lightning_mm.chat import ChatSession, load_chat_model
from lightning_mm.commands.registry import register_command
from lightning_mm.data.images import ImageLoadError

__all__ = ["run"]

QUIT_WORDS = ("exit", "quit")


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
        session = ChatSession(model, args.image, args.max_new_tokens, args.temperature, args.system_prompt)
        if args.question is not None:
            session.ask(args.question, stream=sys.stdout)
            return 0
        for question in _questions(sys.stdin, interactive=sys.stdin.isatty()):
            session.ask(question, stream=sys.stdout)
    except (ValueError, ImageLoadError) as err:
        print(f"lightning-mm chat: error: {err}", file=sys.stderr)
        return 2
    return 0
