"""Config files shipped with the package, found by Hydra through the search path ``pkg://effnn.conf``.

``hardware/*.yaml`` are the accelerator presets: the one definition that training (``model.hardware``),
``tools/search.py``, ``tools/export.py``, ``tools/hwcost.py`` and ``effnn.hw.build_cost_model(name)`` all read.
"""
