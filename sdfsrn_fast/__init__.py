"""sdfsrn_fast: fast differentiable SDF silhouette rendering for single-view 3-D reconstruction (SDF-SRN style).

The library: :func:`render` (one public function, backends chosen per call; with ``surface=True`` a
:class:`RenderOutput` with depth, normals and hits), :func:`available_backends`,
:class:`SDFDecoder`, :class:`Encoder` and the module :mod:`sdfsrn_fast.cameras`. The backends live in
:mod:`sdfsrn_fast.backends`, one module each; the study built on the library (synthetic data, training,
evaluation, figures) lives in :mod:`sdfsrn_fast.study`. Importing the package imports neither triton nor any C++
code; fast backends load on first use.
"""

from . import cameras
from ._dispatch import available_backends, render
from ._surface import RenderOutput
from .models import Encoder, SDFDecoder

__all__ = ["render", "RenderOutput", "available_backends", "SDFDecoder", "Encoder", "cameras"]
__version__ = "0.1.0"
