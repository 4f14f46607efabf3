"""The study built on the library: SDF-SRN trained on synthetic shapes from one silhouette each.

Not part of the library's API: it uses :func:`sdfsrn_fast.render` like any user would. Modules, in the order
they depend on each other (no cycles): :mod:`.data` (shapes, views, exact silhouettes), :mod:`.config` (settings,
presets), :mod:`.views` (rendering a run's predictions, IoU), :mod:`.priors` (eikonal and symmetry terms),
:mod:`.runs` (checkpoints, loading a run), :mod:`.figures`, :mod:`.train` (``sdfsrn-train``) and
:mod:`.evaluate` (``sdfsrn-eval``).
"""
