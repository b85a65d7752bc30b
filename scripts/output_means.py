"""What a CCQL network outputs at very large w: the mean test-set output on the correct class and on
the other classes of each run of Fig 5 at w = 10 K and w = K - 2, read from the runs' final
checkpoints (kept where the runs trained: exported records hold no checkpoint, so elsewhere the
runs must be trained again, `./run_all.sh --preset quick --only 05 --seeds 0,1,2`).

    .venv/bin/python scripts/output_means.py --data-root PATH [--runs-dir DIR]
"""
import argparse

import pandas as pd

from ccql_utils.core.data import load_cifar100
from ccql_utils.figures.registry import FIGURES
from ccql_utils.core.train import Trainer

VARIANTS = ("CCQL w = K-2", "CCQL w = 10K")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--runs-dir", default=None, help="default: runs/ in the repository")
    args = parser.parse_args()
    result = FIGURES["loss_weights"].run(preset="quick", seeds=[0, 1, 2], runs_dir=args.runs_dir,
                                         progress=False, device="cpu", data_root=args.data_root)
    data = load_cifar100(args.data_root, download=False)
    rows = []
    for (name, k, seed), run in result.runs.items():
        if name not in VARIANTS:
            continue
        if not (run.run_dir / "checkpoint.pt").exists():
            print(f"{name} K={k} seed {seed}: no checkpoint in {run.run_dir} (trained elsewhere)")
            continue
        trainer = Trainer(result.configs[name, k, seed], data, run.run_dir, progress=False)
        rows.append({"variant": name, "K": k, "seed": seed, "test_acc": run.final()["test_acc"],
                     **trainer.output_means()})
    table = pd.DataFrame(rows)
    print(table.round(3).to_string(index=False))
    print(table.groupby(["variant", "K"])[["test_acc", "correct_class_output", "wrong_class_output"]]
          .mean().round(3).to_string())


if __name__ == "__main__":
    main()
