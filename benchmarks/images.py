"""Images stored as PNG bytes: per-channel statistics, the normalized copy and the
training loader, in images/s, beside the decode floor and the usual hand-written loop.

    python benchmarks/images.py --rows 40000 --size 64 --dir /tmp/np-images-bench

Every tool runs as its own process on the same files (``datagen.images``: discs on a
noisy background, per-channel offsets): the floor is one process that decodes every
image with Pillow and nothing else; the hand-written loop is what PyTorch users often
write for "the dataset's mean and std" (one process, batches of 256, the mean of the
batches' stds, which is not the std); normpipe's pass runs on a local Dask cluster of
``--workers`` processes. The loader rows are one epoch of ``ParquetBatches`` over the
normalized tensors and over the PNGs decoded on the fly. Each tool's per-channel
mean and std are checked against the exact float64 values (the floor computes them).
A measurement, not a test: nothing asserts a timing. Prints one markdown table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.harness import cpu_model, measure_command  # noqa: E402
from normpipe.datagen import images  # noqa: E402

FLOOR = r"""
import io, json, sys
import numpy as np, pyarrow.dataset as ds
from PIL import Image
sums, squares, count, batch_stds, batch = 0.0, 0.0, 0, [], []
n = 0
for b in ds.dataset(sys.argv[1], format="parquet").to_batches(columns=["image"]):
    for value in b.column(0).to_pylist():
        pixels = np.asarray(Image.open(io.BytesIO(value)), dtype=np.float64).reshape(-1, 3)
        sums = sums + pixels.sum(axis=0); squares = squares + (pixels * pixels).sum(axis=0)
        count += len(pixels); n += 1
        if sys.argv[2] == "loop":
            batch.append(pixels)
            if len(batch) == 256:
                batch_stds.append(np.concatenate(batch).std(axis=0)); batch = []
mean = sums / count
out = {"images": n, "mean": list(mean), "std": list(np.sqrt(squares / count - mean * mean))}
if sys.argv[2] == "loop":
    if batch:
        batch_stds.append(np.concatenate(batch).std(axis=0))
    out["std"] = list(np.mean(batch_stds, axis=0))  # the mean of the batches' stds
print(json.dumps(out))
"""

FIT = r"""
import json, sys
import normpipe
stats = normpipe.fit(sys.argv[1], tensors={"image": {"per": "channel"}},
                     cluster={"workers": int(sys.argv[2])})
state = stats.tensors["image"].state
print(json.dumps({"images": state.rows, "mean": list(state.moments.mean), "std": list(state.std)}))
"""

RUN = r"""
import json, sys
import normpipe
stats, manifest = normpipe.run(sys.argv[1], sys.argv[2], tensors={"image": {"per": "channel"}},
                               cluster={"workers": int(sys.argv[3])}, overwrite=True)
state = stats.tensors["image"].state
print(json.dumps({"images": manifest["rows_out"], "mean": list(state.moments.mean), "std": list(state.std)}))
"""

LOADER = r"""
import json, sys, time
from torch.utils.data import DataLoader
import normpipe
from normpipe.train.data import ParquetBatches
stats = normpipe.Stats.load(sys.argv[2])
data = ParquetBatches(sys.argv[1], ["image"], "radius", split="all", batch_size=256,
                      shuffle_buffer=4096, stats=stats, normalize=False)
started, rows = time.perf_counter(), 0
for x, y in DataLoader(data, batch_size=None, num_workers=int(sys.argv[3])):
    rows += len(y)
print(json.dumps({"images": rows, "seconds": time.perf_counter() - started}))
"""


def _tool(argv: list[str], what: str) -> tuple[dict[str, Any], float, int]:
    measured = measure_command(argv, what)
    return json.loads(measured.stdout.strip().splitlines()[-1]), measured.wall, measured.peak


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/np-images-bench"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    data = args.dir / f"png-{args.rows}-{args.size}"
    if not data.exists():
        images(data, args.rows, args.files, size=args.size)
    python = sys.executable
    workers = str(args.workers)
    results: dict[str, dict[str, Any]] = {}
    floor, wall, peak = _tool([python, "-c", FLOOR, str(data), "floor"], "decode floor")
    results["Pillow decode, 1 process (floor)"] = {**floor, "wall": wall, "peak": peak}
    loop, wall, peak = _tool([python, "-c", FLOOR, str(data), "loop"], "hand-written loop")
    results["hand-written loop (mean of batch stds)"] = {**loop, "wall": wall, "peak": peak}
    fitted, wall, peak = _tool([python, "-c", FIT, str(data), workers], "normpipe fit")
    results[f"normpipe fit, per channel ({workers} workers)"] = {**fitted, "wall": wall, "peak": peak}
    out = args.dir / "normalized"
    ran, wall, peak = _tool([python, "-c", RUN, str(data), str(out), workers], "normpipe run")
    results[f"normpipe run, tensors out ({workers} workers)"] = {**ran, "wall": wall, "peak": peak}
    stats = str(out / "_stats.json")
    for name, source in (("normalized tensors", out), ("PNGs decoded on the fly", data)):
        for loader_workers in ("0", "2"):
            measured, wall, peak = _tool([python, "-c", LOADER, str(source), stats, loader_workers], "loader")
            key = f"loader: {name}, {loader_workers} DataLoader workers"
            results[key] = {**measured, "wall": wall, "peak": peak, "loader": True}
    shutil.rmtree(out, ignore_errors=True)
    exact_std = floor["std"]
    base = floor["images"] / results["Pillow decode, 1 process (floor)"]["wall"]
    print(f"{args.rows:,} PNG images {args.size}x{args.size}x3 in {args.files} files; CPU: {cpu_model()}\n")
    print("| tool | images/s | vs decode floor | peak RSS | per-channel std, max rel. error |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        seconds = r["seconds"] if r.get("loader") else r["wall"]
        rate = r["images"] / seconds
        r["images_per_s"] = rate
        error = max(abs(a - b) / b for a, b in zip(r["std"], exact_std, strict=True)) if "std" in r else None
        r["std_error"] = error
        shown = f"{error:.1e}" if error is not None else "-"
        print(f"| {name} | {rate:,.0f} | {rate / base:.2f}x | {r['peak'] / 2**20:,.0f} MiB | {shown} |")
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": args.rows, "cpu": cpu_model(), "tools": results}, indent=2))


if __name__ == "__main__":
    main()
