"""What the notebooks draw: the experiments and presets (presets.py), one `Figure` protocol
(figure.py), its instances (the paper's Figs 1-3, the K sweep, the weight sweep, the loss zoo)
in one registry (registry.py), and the papermill glue (notebooks.py)."""
