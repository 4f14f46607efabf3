"""sdfsrn_fast: fast differentiable SDF silhouette rendering for single-view 3-D reconstruction (SDF-SRN style).

Public surface: :func:`render`, :func:`available_backends`, :class:`SDFDecoder`, :class:`Encoder`, and the
modules :mod:`sdfsrn_fast.cameras` and :mod:`sdfsrn_fast.data`. Importing the package imports neither triton
nor any C++ code; fast backends load on first use.
"""

from . import cameras, data
from ._dispatch import available_backends, render
from .models import Encoder, SDFDecoder

__all__ = ["render", "available_backends", "SDFDecoder", "Encoder", "cameras", "data"]
__version__ = "0.1.0"
