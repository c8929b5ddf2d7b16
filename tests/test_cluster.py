"""Real processes: separate `dask scheduler` / `dask worker`, and workers with 200 MB
of memory on a dataset larger than all of it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import normpipe
from normpipe.cluster import dask_client, numpy_sort_environ
from normpipe.config import ClusterConfig
from normpipe.datagen import generate
from tests.helpers import assert_rank_close

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


@contextmanager
def dask_processes(
    tmp_path: Path,
    workers: int = 2,
    extra: Sequence[object] = (),
    wait: bool = True,
    log: Path | None = None,
) -> Iterator[tuple[str, list[subprocess.Popen[bytes]]]]:
    """``dask scheduler`` and ``workers`` single-threaded ``dask worker`` processes on
    127.0.0.1 (``extra``: more options for both, e.g. TLS; ``log``: a file that gets
    their output); yields the address and the processes, and stops them all afterwards."""
    info = tmp_path / "scheduler.json"
    env = {**os.environ, "DASK_LOGGING__DISTRIBUTED": "error"}
    output = {} if log is None else {"stdout": log.open("ab"), "stderr": subprocess.STDOUT}
    procs = [
        subprocess.Popen(
            [
                BIN / "dask",
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                info,
                *extra,
            ],
            env=env,
            **output,  # type: ignore[call-overload]
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while not info.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(info.read_text())["address"]
        for _ in range(workers):
            procs.append(
                subprocess.Popen(
                    [
                        BIN / "dask",
                        "worker",
                        address,
                        "--nthreads",
                        "1",
                        "--no-dashboard",
                        "--host",
                        "127.0.0.1",
                        "--memory-limit",
                        "1GB",
                        *extra,
                    ],
                    env=env,
                    **output,  # type: ignore[call-overload]
                )
            )
        if wait:
            from distributed import Client

            with Client(address, timeout="30s") as client:
                client.wait_for_workers(workers, timeout=60)
        yield address, procs
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)


def test_remote_workers_do_not_log_normpipe_errors_while_it_runs(tmp_path: Path) -> None:
    """Workers normpipe did not start: a damaged file fails the run with one line, and
    no worker logs it; the filter leaves with the run (the next client's failure of
    the same kind is logged as Dask logs it)."""
    from distributed import Client

    def raise_input_error() -> None:  # shipped by value: the workers cannot import tests/
        from normpipe.errors import InputError

        raise InputError("injected after the run")

    source = tmp_path / "data"
    source.mkdir()
    for i in range(3):
        pq.write_table(pa.table({"x": np.arange(50.0) + i, "y": np.arange(50.0)}), source / f"p{i}.parquet")
    damaged = bytearray((source / "p1.parquet").read_bytes())
    damaged[4:40] = b"\xff" * 36  # the first data page's header; the footer stays intact
    (source / "p1.parquet").write_bytes(bytes(damaged))
    log = tmp_path / "cluster.log"
    with dask_processes(tmp_path, log=log) as (address, _):
        cmd = [BIN / "normpipe", "run", source, "--output", tmp_path / "out", "--scheduler", address]
        done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300)
        assert done.returncode == 2, done.stderr
        lines = (done.stdout + done.stderr).strip().splitlines()
        assert len(lines) == 1, lines
        assert "p1.parquet, row group 0, column 'x'" in lines[0]
        with Client(address, timeout="30s") as client, pytest.raises(ValueError, match="injected after"):
            client.submit(raise_input_error, pure=False).result()
    text = log.read_text()
    assert text.count("Compute Failed") == 1, text
    assert "injected after the run" in text
    assert "p1.parquet" not in text


@pytest.fixture
def scheduler(tmp_path: Path) -> Iterator[str]:
    """A scheduler and two single-threaded workers, each its own process, on 127.0.0.1."""
    with dask_processes(tmp_path) as (address, _):
        yield address


def test_end_to_end_on_separate_scheduler_and_workers(scheduler: str, tmp_path: Path) -> None:
    source = tmp_path / "data"
    generate(source, 40_000, 4, seed=3, partitions=("a", "b"))
    out = tmp_path / "out"
    cmd = [
        BIN / "normpipe",
        "run",
        source,
        "--output",
        out,
        "--scheduler",
        scheduler,
        "--method",
        "robust",
        "--exclude",
        "id",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert str(out) in done.stdout
    stats = normpipe.Stats.load(out / "_stats.json")
    frame = pd.read_parquet(source)
    result = pd.read_parquet(out)
    for name in ("normal", "lognormal_nan", "counts"):
        values = frame[name].to_numpy(dtype=float)
        assert stats.summary(name).mean == pytest.approx(np.nanmean(values), rel=1e-12)
        assert_rank_close(values, stats.scalers[name].params["center"], 0.5, stats.summary(name).rank_error)
        np.testing.assert_array_equal(result[name].to_numpy(), stats.transform_column(name, values))
    assert (result["key"] == frame["key"]).all()
    assert (result["id"] == frame["id"]).all()
    # A bad input through the real CLI: one line, exit 2, nothing written.
    bad = subprocess.run(
        [
            BIN / "normpipe",
            "run",
            tmp_path / "missing",
            "--output",
            tmp_path / "o2",
            "--scheduler",
            scheduler,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1
    assert "Traceback" not in bad.stderr
    assert bad.stderr.startswith("error: ")
    assert not (tmp_path / "o2").exists()


def _peak_rss_bytes() -> int:
    """The worker's peak resident memory since it started (VmHWM; unlike ru_maxrss it
    does not carry over the parent's peak across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/self/status")


def test_larger_than_memory_with_200mb_workers(tmp_path: Path) -> None:
    source = tmp_path / "big"
    generate(source, 17_000_000, 34, seed=7, row_group_size=16_384, workers=2)
    size = sum(p.stat().st_size for p in source.rglob("*.parquet"))
    assert size >= 3 * 2 * 200_000_000  # at least 3x the workers' memory together
    with dask_client(ClusterConfig(workers=2, threads_per_worker=1, memory_limit="200MB")) as client:
        before = client.run(os.getpid)
        stats, manifest = normpipe.run(source, tmp_path / "out", client=client, exclude=["id"])
        after = client.run(os.getpid)
        peaks = client.run(_peak_rss_bytes)
    assert before == after, "a worker was restarted"
    assert len(after) == 2
    assert max(peaks.values()) < 200_000_000
    assert stats.rows == manifest["rows_out"] == 17_000_000
    for name in ("normal", "lognormal_nan"):
        values = pq.read_table(source, columns=[name]).column(0).to_numpy()
        summary = stats.summary(name)
        assert summary.count == np.isfinite(values).sum()
        assert summary.mean == pytest.approx(np.nanmean(values), rel=1e-10)
        assert summary.std == pytest.approx(np.nanstd(values), rel=1e-10)
        assert (summary.min, summary.max) == (np.nanmin(values), np.nanmax(values))
        for p in (0.25, 0.5, 0.75):
            assert_rank_close(values, summary.quantiles[p], p, summary.rank_error)
    for rel in ("part-00000.parquet", "part-00027.parquet"):
        src = pq.read_table(source / rel, columns=["normal"]).column(0).to_numpy()
        out = pq.read_table(tmp_path / "out" / rel, columns=["normal"]).column(0).to_numpy()
        np.testing.assert_array_equal(out, stats.transform_column("normal", src))


@pytest.mark.parametrize("phase", ["fit", "transform"])
def test_worker_killed_mid_phase_gives_the_undisturbed_result(
    scheduler: str, tmp_path: Path, phase: str
) -> None:
    """SIGKILL one worker process while a phase runs: Dask recomputes the lost work
    (the nanny starts a new worker) and the result equals an undisturbed run's."""
    import signal

    from distributed import Client

    source = tmp_path / "data"
    generate(source, 1_200_000, 24, seed=5, row_group_size=10_000, workers=2)
    with Client(scheduler, timeout="30s") as client:
        reference, _ = normpipe.run(source, tmp_path / "ref", client=client, exclude=["id"])
        pids = list(client.run(os.getpid).values())
        killed: list[int] = []

        def progress(current: str, done: int, total: int) -> None:
            if current == phase and done >= 2 and not killed:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])

        stats, manifest = normpipe.run(
            source, tmp_path / "out", client=client, exclude=["id"], progress=progress
        )
    assert killed, f"the {phase} phase ended before a worker could be killed"
    assert manifest["rows_out"] == 1_200_000
    for name in reference.columns:  # moments merge in a fixed order: identical
        assert stats.summary(name).mean == reference.summary(name).mean
        assert stats.summary(name).std == reference.summary(name).std
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out"), pd.read_parquet(tmp_path / "ref"))


def test_whole_cluster_dying_fails_clearly_and_writes_nothing(tmp_path: Path) -> None:
    source = tmp_path / "data"
    generate(source, 1_200_000, 24, seed=5, row_group_size=10_000, workers=2)
    with dask_processes(tmp_path, workers=1) as (address, cluster):
        run = subprocess.Popen(
            [BIN / "normpipe", "run", source, "--output", tmp_path / "out", "--scheduler", address],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        from distributed import Client

        with Client(address, timeout="30s") as watcher:  # kill once tasks are running
            deadline = time.monotonic() + 120
            while not any(watcher.processing().values()) and time.monotonic() < deadline:
                assert run.poll() is None, "the run ended before the cluster could be killed"
                time.sleep(0.05)
            for proc in cluster:
                proc.kill()
        _, err = run.communicate(timeout=180)
    assert run.returncode == 2, err
    assert err.count("\n") == 1
    assert err.startswith("error: ")
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.normpipe-tmp-*"))


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A key and a self-signed certificate for 127.0.0.1 (it is its own CA)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "normpipe-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_file, cert_file = directory / "key.pem", directory / "cert.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_file, cert_file


def test_tls_scheduler_through_dask_security_settings(tmp_path: Path) -> None:
    key, cert = _self_signed(tmp_path)
    tls = ["--protocol", "tls", "--tls-ca-file", cert, "--tls-cert", cert, "--tls-key", key]
    env = {**os.environ, "DASK_LOGGING__DISTRIBUTED": "error"}
    with dask_processes(tmp_path, workers=1, extra=tls, wait=False) as (address, _):
        assert address.startswith("tls://")
        source = tmp_path / "data"
        generate(source, 20_000, 2, seed=1)
        # The client's side: Dask's own security settings, here as environment variables
        # (the same keys as in ~/.config/dask/distributed.yaml).
        secure = {
            **env,
            "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": str(cert),
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": str(cert),
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": str(key),
            "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
        }
        cmd = [
            BIN / "normpipe",
            "run",
            source,
            "--output",
            tmp_path / "out",
            "--scheduler",
            address,
            "--exclude",
            "id",
        ]
        done = subprocess.run(cmd, env=secure, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert json.loads((tmp_path / "out" / "_SUCCESS").read_text())["rows_out"] == 20_000
        # without the certificates: one clear line, nothing written
        plain = subprocess.run(
            [*cmd[:4], tmp_path / "o2", *cmd[5:]], env=env, capture_output=True, text=True, timeout=300
        )
        assert plain.returncode == 2
        assert plain.stderr.count("\n") == 1
        assert "cannot reach the Dask scheduler" in plain.stderr
        assert not (tmp_path / "o2").exists()


def _worker_environ() -> dict[str, str | None]:
    names = (
        "MALLOC_TRIM_THRESHOLD_",
        "MIMALLOC_PURGE_DELAY",
        "ARROW_DEFAULT_MEMORY_POOL",
        "NPY_DISABLE_CPU_FEATURES",
    )
    return {name: os.environ.get(name) for name in names}


def test_worker_settings_follow_the_memory_limit_and_stay_out_of_this_process() -> None:
    """Large workers keep freed memory for reuse; small ones hand memory back and use
    the system allocator; both get numpy's sort settings for this CPU. Neither cluster's settings
    reach this process's environment or the next cluster (Dask's nannies copy them
    into ``os.environ`` before spawning)."""
    before = dict(os.environ)
    sort = numpy_sort_environ().get("NPY_DISABLE_CPU_FEATURES", before.get("NPY_DISABLE_CPU_FEATURES"))
    with dask_client(ClusterConfig(workers=1, memory_limit="2GB")) as client:
        (large,) = client.run(_worker_environ).values()
        os.environ["NORMPIPE_TEST_MARK"] = "kept"  # the caller's own changes stay
    assert os.environ.pop("NORMPIPE_TEST_MARK") == "kept"
    assert dict(os.environ) == before
    with dask_client(ClusterConfig(workers=1, memory_limit="300MB")) as client:
        (small,) = client.run(_worker_environ).values()
    assert dict(os.environ) == before
    assert large == {
        "MALLOC_TRIM_THRESHOLD_": str(256 * 2**20),
        "MIMALLOC_PURGE_DELAY": "-1",
        "ARROW_DEFAULT_MEMORY_POOL": None,
        "NPY_DISABLE_CPU_FEATURES": sort,
    }
    assert small == {
        "MALLOC_TRIM_THRESHOLD_": before.get("MALLOC_TRIM_THRESHOLD_", "65536"),  # Dask's default
        "MIMALLOC_PURGE_DELAY": None,
        "ARROW_DEFAULT_MEMORY_POOL": "system",
        "NPY_DISABLE_CPU_FEATURES": sort,
    }


def _numpy_dispatch_targets() -> list[str]:
    from numpy._core._multiarray_umath import __cpu_dispatch__

    return list(__cpu_dispatch__)


def _cpuinfo(vendor: str, family: int, flags: str) -> str:
    core = (
        f"processor\t: 0\nvendor_id\t: {vendor}\ncpu family\t: {family}\nflags\t\t: fpu sse2 avx2 {flags}\n"
    )
    return core + "\n" + core.replace(": 0", ": 1")  # a second processor, as /proc/cpuinfo lists them


@pytest.mark.parametrize(
    ("vendor", "family", "flags", "turned_off"),
    [
        ("AuthenticAMD", 25, "avx512f avx512bw", True),  # Zen 4: microcoded compress-store
        ("AuthenticAMD", 25, "", False),  # Zen 3: no AVX-512 to turn off
        ("AuthenticAMD", 26, "avx512f avx512bw", False),  # Zen 5: fast again
        ("GenuineIntel", 6, "avx512f avx512bw", False),  # AVX-512 is numpy's fastest sort there
    ],
)
def test_numpy_avx512_sort_is_turned_off_only_on_zen4(
    vendor: str, family: int, flags: str, turned_off: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NPY_DISABLE_CPU_FEATURES", raising=False)
    environ = numpy_sort_environ(_cpuinfo(vendor, family, flags))
    if not any(t.startswith("AVX512") for t in _numpy_dispatch_targets()):
        turned_off = False  # a numpy built without AVX-512 kernels: nothing to turn off
    if not turned_off:
        assert environ == {}
        return
    targets = environ["NPY_DISABLE_CPU_FEATURES"].split()
    assert targets
    assert all(t.startswith("AVX512") or t == "X86_V4" for t in targets)
    # numpy accepts the list: a child process imports it and still sorts correctly
    code = "import numpy as np; x = np.random.default_rng(0).normal(size=10**5)"
    code += "; print((np.sort(x) == sorted(x)).all())"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **environ},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stdout.strip(), done.stderr) == (0, "True", "")
    monkeypatch.setenv("NPY_DISABLE_CPU_FEATURES", "")  # the caller's own choice is kept
    assert numpy_sort_environ(_cpuinfo(vendor, family, flags)) == {}
