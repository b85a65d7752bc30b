"""`python -m ccql_utils`: the commands (main.py), their options (options.py), the GPU lease's
queue and packing (gpu_queue.py, remote.py)."""
