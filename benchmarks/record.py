"""The benchmark record: tables of rows written as JSON and markdown after every part, so a run
cut off keeps what it measured; a part that fails is recorded and the others go on."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

from ccql_utils.provenance import atomic_write_text


def job_arguments(description: str, budget_s: float, parts: str) -> argparse.ArgumentParser:
    """The options every GPU-round job takes; a job adds its own to the parser."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--budget-s", type=float, default=budget_s)
    ap.add_argument("--parts", default=parts)
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--unverified-data", action="store_true", help="accept stand-in data (the tests)")
    ap.add_argument("--commit", help="the commit the tree came from (for a copy without .git)")
    return ap


def job_record(stem: str, args: argparse.Namespace):
    """(device, Record) of a job: the CPU for --dry-run, else CUDA; written to $OUT (or a temporary
    folder) with the device, environment (commit), date and dry-run flag as its meta."""
    import torch
    from ccql_utils.provenance import describe_device, environment_record
    device = torch.device("cpu" if args.dry_run else "cuda")
    out = Path(os.environ.get("OUT") or tempfile.mkdtemp(prefix=f"{stem}-"))
    environment = environment_record() | ({"commit": args.commit} if args.commit else {})
    meta = {"device": describe_device(device), "dry_run": args.dry_run, "environment": environment,
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return device, Record(out, stem, meta, args.budget_s, set(args.parts.split(",")))


class Record:
    """One run's results, written to `<stem>.json` and `<stem>.md` in `out_dir` after every part."""

    def __init__(self, out_dir: Path, stem: str, meta: dict, budget_s: float, parts: set):
        self.out_dir, self.stem, self.budget_s, self.parts = Path(out_dir), stem, budget_s, parts
        self.data = {"title": stem, "meta": meta, "tables": {}, "notes": [], "errors": [], "seconds": {}}
        self.start = time.perf_counter()
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def part(self, name: str, fn, need_s: float = 0.0) -> None:
        """Add fn()'s {table: row or rows}, unless the part's kind (first word of `name`) is not
        asked for or `need_s` exceeds the budget left; an exception is recorded, not raised."""
        if name.split()[0] not in self.parts:
            return
        left = self.budget_s - (time.perf_counter() - self.start)
        if left < need_s:
            self.data["notes"].append(f"{name}: skipped, needs ~{need_s:.0f} s, {left:.0f} s left")
            return
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            for table, rows in fn().items():
                self.data["tables"].setdefault(table, []).extend(rows if isinstance(rows, list) else [rows])
        except Exception as exc:  # a broken part must not lose the others
            self.data["errors"].append({"part": name, "error": f"{type(exc).__name__}: {exc}",
                                        "traceback": traceback.format_exc()})
            print(f"[bench] {name} FAILED: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        self.data["seconds"][name] = time.perf_counter() - start
        self.write()

    def write(self) -> None:
        self.data["meta"].update(load_average_end=[round(x, 2) for x in os.getloadavg()],
                                 total_s=time.perf_counter() - self.start)
        strict = json.loads(json.dumps(self.data), parse_constant=lambda _: None)  # NaN -> null
        atomic_write_text(self.out_dir / f"{self.stem}.json", json.dumps(strict, indent=1) + "\n")
        atomic_write_text(self.out_dir / f"{self.stem}.md", markdown(self.data))


def _cell(v) -> str:
    if v is None or isinstance(v, bool):
        return {None: "-", True: "yes", False: "no"}[v]
    if isinstance(v, float) and np.isfinite(v):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.2f}" if abs(v) >= 1 else f"{v:.3g}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def markdown(d: dict) -> str:
    """The record as markdown (its one renderer): meta as a list, each table with its scalar columns."""
    lines = [f"# {d['title']}", ""] + [f"- {k}: {_cell(v) if np.isscalar(v) or v is None else v}"
                                      for k, v in d["meta"].items()] + [""]
    for name, rows in d["tables"].items():
        if not rows:  # e.g. ratios when the parts they derive from did not run
            continue
        cols = [c for c in dict.fromkeys(k for r in rows for k in r)
                if not any(isinstance(r.get(c), (list, dict)) for r in rows)]
        numeric = [all(type(r.get(c)) in (int, float, type(None)) for r in rows) for c in cols]
        lines += [f"## {name}", "", "| " + " | ".join(cols) + " |",
                  "| " + " | ".join("---:" if n else "---" for n in numeric) + " |"]
        lines += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in rows] + [""]
    for title, items in (("notes", d["notes"]), ("errors", [f"{e['part']}: `{e['error']}`" for e in d["errors"]]),
                         ("seconds per part", [f"{k}: {v:.1f}" for k, v in d["seconds"].items()])):
        lines += [f"## {title}", ""] + [f"- {i}" for i in items] + [""] if items else []
    return "\n".join(lines)
