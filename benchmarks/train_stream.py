"""Streaming training data: peak memory at two dataset sizes, and training throughput.

    python benchmarks/train_stream.py --rows 2000000 10000000 --dir /tmp/np-train-bench

For each size, a fresh process streams one epoch of the training split through
``ParquetBatches`` (bounded shuffle buffer, 2 DataLoader workers) and reports its peak
resident memory (the parent's and the workers' VmHWM) and rows/s; then one epoch of an
MLP (64, 64) with batch norm is trained on it in the same process, without loader
workers (rows/s, CPU unless CUDA is available, and the process's peak after it).
If memory is flat, the peak does not grow with the dataset. A measurement, not a
test: nothing asserts a timing. Prints one markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from normpipe.datagen import regression

CHILD = r"""
import json, sys, time
from pathlib import Path
import torch
from torch.utils.data import DataLoader, get_worker_info
from normpipe.train.data import ParquetBatches
from normpipe.train.loop import TrainConfig, fit_model, device_for
from normpipe.train.models import MLP

def hwm():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

class Measured(ParquetBatches):
    def __iter__(self):
        for batch in super().__iter__():
            yield batch
        if get_worker_info() is not None:  # report the worker's peak with its last batch
            yield torch.tensor([float(hwm())]), torch.tensor([-1.0])

source = sys.argv[1]
data = Measured(source, ["t", "g", "z", "u"], "y", batch_size=1024, shuffle_buffer=65_536)
started, rows, workers = time.perf_counter(), 0, []
for x, y in DataLoader(data, batch_size=None, num_workers=2):
    if len(y) == 1 and y[0] == -1.0:
        workers.append(x[0].item())
        continue
    rows += len(y)
stream_s = time.perf_counter() - started
stream_peak = hwm()
torch.manual_seed(0)
model = MLP(4, (64, 64), "batch")
config = TrainConfig(["t", "g", "z", "u"], "y", max_epochs=1, batch_size=1024, device="auto")
plain = ParquetBatches(source, ["t", "g", "z", "u"], "y", batch_size=1024, shuffle_buffer=65_536)
valid = ParquetBatches(source, ["t", "g", "z", "u"], "y", split="valid", batch_size=65_536, shuffle_buffer=0)
train = DataLoader(plain, batch_size=None, num_workers=0)  # on 2 cores, workers slow training
result = fit_model(model, train, DataLoader(valid, batch_size=None), lambda v: v, config)
print(json.dumps({"rows": rows, "stream_rows_per_s": rows / stream_s, "parent_peak": stream_peak,
                  "train_peak": hwm(),
                  "worker_peak": max(workers), "train_rows_per_s": result.metrics["rows_per_s"],
                  "device": str(device_for("auto"))}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[2_000_000, 10_000_000])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/np-train-bench"))
    args = parser.parse_args()
    print(
        "| rows (train split) | file size | stream rows/s | peak RSS main | peak RSS worker | "
        "train rows/s (MLP 64x64 batch norm) | peak RSS after training | device |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for rows in args.rows:
        directory = args.dir / f"rows-{rows}"
        if not directory.exists():
            regression(directory, rows, files=max(1, rows // 500_000))
        size = sum(p.stat().st_size for p in directory.glob("*.parquet"))
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", CHILD, str(directory)], capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(out.stderr)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"| {r['rows']:,} | {size / 1e6:.0f} MB | {r['stream_rows_per_s']:,.0f} | "
            f"{r['parent_peak'] / 2**20:.0f} MiB | {r['worker_peak'] / 2**20:.0f} MiB | "
            f"{r['train_rows_per_s']:,.0f} | {r['train_peak'] / 2**20:.0f} MiB | {r['device']} |"
            f"  <!-- {time.perf_counter() - started:.0f} s -->"
        )


if __name__ == "__main__":
    main()
