"""Model references as artifact URIs, so the base model is a KFP artifact (an importer) and shows
in the pipeline's lineage, and back again for `models.resolve_model_dir`.

A Hub id becomes `hf://<id>` and a built-in model `builtin://<name>`: schemes the KFP launcher
does not download (it logs a warning and passes the URI on); object-store URIs and paths stay.
"""
from __future__ import annotations

from pathlib import Path

HUB = "hf://"
BUILTIN = "builtin://"


def model_uri(ref: str) -> str:
    """The artifact URI of a model reference (see `sidreasoner_core.models`)."""
    from .models import SCRATCH_SIZES, SMOLLM2

    ref = str(ref)
    if not ref:
        raise ValueError("model reference is empty: set model_ref or align.model in the preset")
    if "://" in ref:
        return ref
    if ref.partition("@")[0] in SCRATCH_SIZES or ref == SMOLLM2:
        return BUILTIN + ref
    if ref.count("/") == 1 and not ref.startswith((".", "/")) and not Path(ref).exists():
        return HUB + ref
    return str(Path(ref).resolve())


def model_ref(uri: str) -> str:
    """The model reference behind an artifact URI (inverse of `model_uri`)."""
    for scheme in (HUB, BUILTIN):
        if uri.startswith(scheme):
            return uri[len(scheme):]
    return uri
