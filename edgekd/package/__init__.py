"""Deployment bundles: the model, its preprocessing, a runner, a Dockerfile for the target, a manifest.

``bundle.build_bundle`` assembles one folder (and its ``.tar.gz``) from a finished run;
``tarball`` writes and safely extracts the archive; ``dockerfiles`` picks the base image for a
target; ``engine_script`` writes ``build_engine.sh``; ``model_card`` writes ``MODEL_CARD.md``;
``templates/`` holds the files shipped as they are (``infer.py``, ``entrypoint.sh``).
"""

from edgekd.package.bundle import build_bundle
from edgekd.package.tarball import safe_extract, write_tarball

__all__ = ["build_bundle", "safe_extract", "write_tarball"]
