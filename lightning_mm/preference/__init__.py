"""Preference optimisation (DPO, IPO, SimPO) on pairs: losses, answer log-probabilities, the reference, the data."""

from lightning_mm.preference.data import PAIRS_KEY, PreferenceCollator, make_pair
from lightning_mm.preference.logprobs import answer_logprobs, target_logprobs
from lightning_mm.preference.loss import LOSS_TYPES, PreferenceLoss, preference_loss
from lightning_mm.preference.module import PreferenceModule
from lightning_mm.preference.records import PreferenceDataModule, PreferencePairDataset
from lightning_mm.preference.reference import REFERENCES, adapters_disabled, frozen_copy
from lightning_mm.preference.synthetic import SyntheticPreferenceDataModule, SyntheticPreferenceDataset

__all__ = [
    "LOSS_TYPES",
    "PAIRS_KEY",
    "REFERENCES",
    "PreferenceCollator",
    "PreferenceDataModule",
    "PreferenceLoss",
    "PreferenceModule",
    "PreferencePairDataset",
    "SyntheticPreferenceDataModule",
    "SyntheticPreferenceDataset",
    "adapters_disabled",
    "answer_logprobs",
    "frozen_copy",
    "make_pair",
    "preference_loss",
    "target_logprobs",
]
