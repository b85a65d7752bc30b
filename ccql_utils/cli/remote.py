"""Commands for training elsewhere: run records between machines (export, import), data packs
for machines without the full data set (pack, verify-pack), and the queue of paper-scale GPU runs
(plan, lease; scripts/gpu_lease.sh)."""
from __future__ import annotations

import sys

from .options import _classes, add_store_arguments, command, context
from ..core.config import TrainConfig, resolve_device
from ..figures.presets import EXPERIMENTS, PRESETS, resolve_preset


def cmd_export(args) -> int:
    from ..figures.presets import experiment_configs
    from ..execution.records import export_records
    ctx = context(args)
    if args.experiment:
        dirs = [ctx.store.path(c) for e in args.experiment
                for c in experiment_configs(e, resolve_preset(args.preset)).values()]
    else:  # not the hidden folders of an import or export killed midway
        dirs = (sorted(p for p in ctx.runs_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
                if ctx.runs_dir.is_dir() else [])
    exported = export_records(dirs, args.output)
    print(f"exported {len(exported)} finished or diverged run(s) of {len(dirs)} to {args.output}",
          file=sys.stderr)
    return 0 if exported else 1


def cmd_import(args) -> int:
    from ..execution.records import import_records
    runs_dir = context(args).runs_dir
    added = import_records(args.source, runs_dir, replace=args.replace)
    print(f"added {len(added)} run(s) to {runs_dir}" + "".join(f"\n    {a}" for a in added),
          file=sys.stderr)
    return 0


def cmd_pack(args) -> int:
    from ..core.data import load_cifar100, select_classes
    from ..core.packs import pack_subset
    data = load_cifar100(args.data_root, verify=not args.unverified_data, download=False)
    config = TrainConfig(classes=args.classes, num_classes=args.k, seed=args.class_seed,
                         train_per_class=args.train_per_class, test_per_class=args.test_per_class).resolved()
    classes = select_classes(config.classes, data, config.num_classes, config.class_seed)
    path = pack_subset(data, args.output, classes, config.train_per_class, config.test_per_class,
                       part_mib=args.part_mib)
    sizes = sorted(p.stat().st_size for p in path.iterdir()) if path.is_dir() else [path.stat().st_size]
    what = f"{len(sizes) - 1} parts + manifest, the largest" if path.is_dir() else "one file,"
    print(f"wrote {path} ({what} {sizes[-1] / 2**20:.1f} MiB; {sum(sizes) / 2**20:.1f} MiB in all): "
          f"{len(classes)} classes, {config.train_per_class or 'all'} train / "
          f"{config.test_per_class or 'all'} test images per class")
    return 0


def cmd_verify_pack(args) -> int:
    from ..core.packs import load_packed
    data = load_packed(args.path)  # DataError names a missing or damaged part
    print(f"{args.path}: complete, {len(data.train_images)} training and {len(data.test_images)} test "
          f"images, " + ("the real CIFAR-100 (checked image by image)" if data.verified else
                         "NOT the real CIFAR-100: runs on it need --unverified-data and get run ids of their own"))
    return 0


DRY_RUN = dict(depth=10, width=1, epochs=2, train_per_class=10, batch_size=64)  # a lease's CPU rehearsal


def cmd_plan(args) -> int:
    from .gpu_queue import plan
    overrides = DRY_RUN if args.dry_run else None
    print(plan(args.budget_s, context(args).store, args.data_root, overrides=overrides).describe())
    return 0


def cmd_lease(args) -> int:
    from .gpu_queue import lease
    resolve_device(args.device)
    return lease(context(args), args.budget_s, args.output, args.device,
                 overrides=DRY_RUN if args.dry_run else None)


def add_commands(sub) -> None:
    p = command(sub, "export", cmd_export,
                "records of finished runs (config, metrics, status; no checkpoints)")
    p.add_argument("--output", required=True, help="a folder, or a file ending in .tar.gz")
    p.add_argument("--experiment", action="append", choices=EXPERIMENTS,
                   help="only this experiment's runs (repeatable; default: every run in --runs-dir)")
    p.add_argument("--preset", default="auto", choices=(*PRESETS, "auto"))
    add_store_arguments(p, data=False)

    p = command(sub, "pack", cmd_pack, "write a class subset as one .npz, or as a folder of parts (use "
                "either as --data-root on a machine without the full data set, e.g. a GPU node)")
    p.add_argument("--classes", type=_classes, default="random", help="random | all | mammals | names")
    p.add_argument("--k", type=int, default=None, help="K, with --classes random")
    p.add_argument("--class-seed", type=int, default=0, help="seed of the random class draw")
    for split in ("train", "test"):
        p.add_argument(f"--{split}-per-class", type=int, default=None, help="first N per class (default all)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--output", required=True,
                   help="a .npz to write (e.g. .carry/k25.npz), or a folder of parts (e.g. .carry/all)")
    p.add_argument("--unverified-data", action="store_true",
                   help="pack a copy whose content is not CIFAR-100's (a test stand-in)")
    p.add_argument("--part-mib", type=float, default=None,
                   help="with a folder output: the largest part in MiB (default 50)")

    command(sub, "verify-pack", cmd_verify_pack, "check a pack (.npz or a folder of parts): complete, "
            "intact, and whether it is the real CIFAR-100").add_argument("path")

    for name, func, help_text in (
            ("plan", cmd_plan, "the next paper-scale GPU runs of the queue that fit a budget"),
            ("lease", cmd_lease, "train the plan on a GPU, exporting the records after each run")):
        p = command(sub, name, func, help_text)
        p.add_argument("--budget-s", type=float, required=True, help="seconds of training available")
        p.add_argument("--dry-run", action="store_true",
                       help=f"rehearse on a CPU: every run shrunk to {DRY_RUN} (estimates stay the real ones)")
        add_store_arguments(p)
        if name == "lease":
            p.add_argument("--output", required=True, help="folder for records.tar.gz (the job's $OUT)")
            p.add_argument("--device", default="cuda", help="cuda (default) | cuda:N | cpu")

    p = command(sub, "import", cmd_import, "add exported run records to a runs folder (checked first)")
    p.add_argument("source", help="a .tar.gz made by export, or a folder of run folders")
    p.add_argument("--replace", action="store_true",
                   help="replace a stored run whose record differs from (or is damaged compared "
                        "with) the imported one; its checkpoint goes too")
    add_store_arguments(p, data=False)
