"""Answer normalisation of the VQA evaluation, and the whitespace/case normalisation of ANLS.

:func:`normalize_answer` follows the official VQA evaluation (the one behind VQAv2's accuracy) step by step:

1. newlines and tabs become spaces, the ends are stripped;
2. punctuation: each of ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !`` is deleted where it touches a space (or when
   the answer holds a digit-comma-digit group such as ``1,000``), and replaced by a space elsewhere
   (``yes/no`` -> ``yes no``); a period is deleted unless a digit follows it (``3.5`` keeps its point). Apostrophes
   and colons are kept;
3. lower case; number words ``none``, ``zero`` ... ``ten`` become digits; the articles ``a``, ``an``, ``the`` are
   dropped;
4. contractions written without their apostrophe get it back (``dont`` -> ``don't``, ``couldnt've`` ->
   ``couldn't've``), so both spellings compare equal.
"""

from __future__ import annotations

import itertools
import re

__all__ = ["ARTICLES", "CONTRACTIONS", "NUMBER_WORDS", "normalize_answer", "normalize_text", "process_punctuation"]

NUMBER_WORDS: dict[str, str] = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
ARTICLES = frozenset({"a", "an", "the"})
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")

# The contractions the VQA evaluation restores, in their written form.
_CANONICAL_CONTRACTIONS = (
    "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't he'd "
    "he'd've he's how'd how'll how's i'd i'd've i'm i've isn't it'd it'd've it'll it's let's ma'am mightn't "
    "mightn't've might've mustn't must've needn't not've o'clock oughtn't 'ow's'at shan't she'd've she's should've "
    "shouldn't shouldn't've somebody'd somebody'd've somebody'll somebody's someone'd someone'd've someone'll "
    "someone's something'd something'd've something'll that's there'd there'd've there're there's they'd they'd've "
    "they'll they're they've wasn't we'd've we've weren't what'll what're what's what've when's where'd where's "
    "where've who'd who'd've who'll who's who've why'll why're why's won't would've wouldn't wouldn't've y'all "
    "y'all'll y'all'd've you'd you'd've you'll you're you've"
).split()


def _without_apostrophes(word: str) -> list[str]:
    """Every spelling of ``word`` with one or more of its apostrophes left out."""
    parts = word.split("'")
    variants = []
    for keep in itertools.product((True, False), repeat=len(parts) - 1):
        if all(keep):
            continue
        out = parts[0]
        for k, part in zip(keep, parts[1:], strict=True):
            out += ("'" if k else "") + part
        variants.append(out)
    return variants


#: English words that a contraction without its apostrophe would collide with: kept as they are.
_REAL_WORDS = frozenset({"its", "ill", "id", "hell", "shell", "well", "wed", "were", "lets", "shed"})

#: Spelling without (some) apostrophes -> the contraction (``dont`` -> ``don't``, ``couldntve`` -> ``couldn't've``).
CONTRACTIONS: dict[str, str] = {
    variant: word
    for word in _CANONICAL_CONTRACTIONS
    for variant in _without_apostrophes(word)
    if variant not in _REAL_WORDS
}

_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")


def process_punctuation(text: str) -> str:
    """Step 2 of :func:`normalize_answer`: the VQA evaluation's punctuation handling (case and words untouched)."""
    out = text
    number_with_commas = _DIGIT_COMMA_DIGIT.search(text) is not None
    for p in PUNCTUATION:
        if p + " " in text or " " + p in text or number_with_commas:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out)


def normalize_answer(text: str) -> str:
    """The VQA evaluation's answer normalisation (see the module docstring).

    >>> normalize_answer("Two dogs.")
    '2 dogs'
    >>> normalize_answer("The cat's toy!")
    "cat's toy"
    """
    text = text.replace("\n", " ").replace("\t", " ").strip()
    words = []
    for word in process_punctuation(text).lower().split():
        word = NUMBER_WORDS.get(word, word)
        if word not in ARTICLES:
            words.append(CONTRACTIONS.get(word, word))
    return " ".join(words)


def normalize_text(text: str) -> str:
    """ANLS's normalisation: lower case, runs of whitespace collapsed to one space, ends stripped."""
    return " ".join(text.lower().split())
