"""napari_sampo: the napari plugin over ``sampo_engine`` (npe2 manifest in ``napari.yaml``).

Importing this package is cheap on purpose: napari imports it while it discovers plugins, so
Qt, torch and the engine are imported only by the modules that a contribution actually loads
(``_widget_*``, ``_reader``, ``_sample_data``).
"""

from sampo_engine._version import __version__

__all__ = ["__version__"]
