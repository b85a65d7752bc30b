"""Where runs live and how they are obtained: the content-addressed run store and its records
(export, import), the run context, the scheduler (here, stacked on a GPU, or on Ray) and LR sweeps."""
