"""The VQA answer normalisation, worked by hand on the cases the official evaluation describes."""

import pytest

from lightning_mm.metrics import normalize_answer, normalize_text
from lightning_mm.metrics.normalize import CONTRACTIONS, process_punctuation


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Yes", "yes"),  # case
        ("  two\tdogs\n", "2 dogs"),  # tabs/newlines, number words
        ("None", "0"),
        ("ten", "10"),
        ("A dog", "dog"),  # articles
        ("the man on an elephant", "man on elephant"),
        ("Dog.", "dog"),  # a period not before a digit goes
        ("3.5", "3.5"),  # ... one before a digit stays
        ("1,000", "1000"),  # digit,digit: commas deleted, not spaced
        ("red, white", "red white"),  # ", " touches a space: deleted
        ("yes/no", "yes no"),  # no space around "/": replaced by a space
        ("black-and-white", "black and white"),
        ("(left) side", "left side"),  # "(" touches no space but ") " does: the rule is per character
        ("what?", "what"),
        ("dont", "don't"),  # contractions get their apostrophe back
        ("Doesnt", "doesn't"),
        ("couldntve", "couldn't've"),
        ("couldn'tve", "couldn't've"),
        ("don't", "don't"),
        ("it's", "it's"),  # apostrophes are kept, ...
        ("its", "its"),  # ... and a real word is not turned into a contraction
        ("12:30", "12:30"),  # colons are not punctuation here
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_punctuation_only_touches_punctuation():
    assert process_punctuation("A-B") == "A B"  # case kept, no number-word or article step
    assert process_punctuation("a - b") == "a  b"  # "-" touches a space: deleted, the spaces stay


def test_every_contraction_variant_maps_to_a_spelling_with_apostrophes():
    assert CONTRACTIONS["wouldntve"] == "wouldn't've"
    assert CONTRACTIONS["wouldn'tve"] == "wouldn't've"
    assert all("'" not in k or k.count("'") < v.count("'") for k, v in CONTRACTIONS.items())
    assert "well" not in CONTRACTIONS and "id" not in CONTRACTIONS


def test_anls_normalisation_is_case_and_whitespace_only():
    assert normalize_text("  The  Cat.\n") == "the cat."
