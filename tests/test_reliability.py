"""Nothing lost, nothing executed: killed writes, overlapping runs, crafted artifacts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from normpipe.artifact import Stats
from normpipe.commit import SUCCESS, committed_output, destination, output_lock
from normpipe.config import load_config
from normpipe.datagen import generate
from normpipe.errors import ArtifactError, ConfigError, OutputError

BIN = Path(sys.executable).parent


def run_cli(*args: object, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [BIN / "normpipe", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,  # type: ignore[call-overload]
    )


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, Path]:
    """A dataset slow enough to kill mid-write, and an in-process cluster config (so a
    SIGKILL takes the workers with it)."""
    data = tmp_path / "data"
    generate(data, 1_500_000, 30, seed=3, row_group_size=10_000, workers=2)
    config = tmp_path / "local.yaml"
    config.write_text("cluster: {processes: false, workers: 1, threads_per_worker: 1}\nexclude: [id]\n")
    return data, config


def leftovers(output: Path) -> list[str]:
    return sorted(p.name for p in output.parent.glob(f".{output.name}.normpipe-*") if "lock" not in p.name)


def test_killed_while_writing_keeps_the_old_output_and_the_next_run_cleans_up(
    dataset: tuple[Path, Path], tmp_path: Path
) -> None:
    data, config = dataset
    out = tmp_path / "out"
    first = run_cli("run", data, "--output", out, "--config", config)
    assert first.wait(timeout=300) == 0, first.stderr.read() if first.stderr else ""
    manifest = (out / SUCCESS).read_text()
    before = pd.read_parquet(out)

    second = run_cli("run", data, "--output", out, "--config", config, "--overwrite")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # wait until the new output is half written
        tmp = list(tmp_path.glob(".out.normpipe-tmp-*"))
        if tmp and len(list(tmp[0].glob("*.parquet"))) >= 3:
            break
        assert second.poll() is None, "the run finished before it could be killed"
        time.sleep(0.05)
    second.send_signal(signal.SIGKILL)
    second.wait(timeout=30)

    # the earlier output is untouched and whole; the half-written one is not visible
    assert (out / SUCCESS).read_text() == manifest
    pd.testing.assert_frame_equal(pd.read_parquet(out), before)
    stale = leftovers(out)
    assert stale
    assert all("tmp" in name for name in stale)
    assert not any((tmp_path / name / SUCCESS).exists() for name in stale)

    third = run_cli("run", data, "--output", out, "--config", config, "--overwrite")
    assert third.wait(timeout=300) == 0
    assert leftovers(out) == []
    assert json.loads((out / SUCCESS).read_text())["rows_out"] == 1_500_000


def test_a_run_killed_between_the_two_renames_gets_its_old_output_back(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "part.parquet").write_bytes(b"old data")
    (out / SUCCESS).write_text("{}")
    # the state a run leaves when killed after moving the old output aside
    out.rename(tmp_path / ".out.normpipe-old-abc")
    (tmp_path / ".out.normpipe-tmp-abc").mkdir()
    seen = []
    with committed_output(out):  # a run that writes nothing new
        seen.append((out / "part.parquet").read_bytes())  # the old output was restored first
    assert seen == [b"old data"]
    shutil.rmtree(out)
    (tmp_path / ".out.normpipe-old-def").mkdir()  # an old copy without _SUCCESS is not restored
    with committed_output(out) as tmp:
        (tmp / SUCCESS).write_text("{}")
    assert sorted(p.name for p in out.iterdir()) == [SUCCESS]
    assert leftovers(out) == []


def test_overlapping_runs_one_wins_the_other_fails_clearly(
    dataset: tuple[Path, Path], tmp_path: Path
) -> None:
    data, config = dataset
    out = tmp_path / "out"
    with output_lock(out):  # another run is writing
        blocked = run_cli("run", data, "--output", out, "--config", config)
        assert blocked.wait(timeout=300) == 2
        err = blocked.stderr.read() if blocked.stderr else ""
        assert "another normpipe run is writing" in err
        assert err.count("\n") == 1
        assert not out.exists()
        assert leftovers(out) == []
    # two real runs at once: each either completes or fails on the lock; one whole dataset
    runs = [run_cli("run", data, "--output", out, "--config", config, "--overwrite") for _ in range(2)]
    codes = [r.wait(timeout=300) for r in runs]
    errors = [r.stderr.read() if r.stderr else "" for r in runs]
    assert 0 in codes
    for code, err in zip(codes, errors, strict=True):
        assert code == 0 or "another normpipe run is writing" in err
    assert json.loads((out / SUCCESS).read_text())["rows_out"] == 1_500_000
    assert len(pd.read_parquet(out)) == 1_500_000
    assert leftovers(out) == []


HOLD_LOCK = """
import time
from pathlib import Path
from normpipe.commit import output_lock
with output_lock(Path({out!r})):
    print("held", flush=True)
    time.sleep(60)
"""


def test_lock_is_released_when_its_holder_dies(tmp_path: Path) -> None:
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK.format(out=str(out))],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(OutputError, match="another normpipe run"), output_lock(out):
        pass
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    with output_lock(out):  # no stale lock
        pass


@pytest.mark.parametrize("relpath", ["../escape.parquet", "a/../../x.parquet", "/etc/x.parquet", ""])
def test_no_path_leaves_the_output(tmp_path: Path, relpath: str) -> None:
    with pytest.raises(OutputError, match="would leave the output"):
        destination(tmp_path, relpath)
    assert destination(tmp_path, "region=east/p.parquet") == tmp_path / "region=east" / "p.parquet"


# ------------------------------------------------------------------ nothing executed
def test_yaml_tags_cannot_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for payload in (
        f"source: !!python/object/apply:os.system ['touch {marker}']\n",
        f"!!python/object/apply:subprocess.call [['touch', '{marker}']]\n",
        "source: !!python/name:os.system\n",
    ):
        config = tmp_path / "evil.yaml"
        config.write_text(payload)
        with pytest.raises(ConfigError):
            load_config(config)
    assert not marker.exists()


def test_pickle_payload_as_artifact_or_model_cannot_run_code(tmp_path: Path) -> None:
    import pickle

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, (f"touch {marker}",))

    payload = pickle.dumps(Evil())
    (tmp_path / "stats.json").write_bytes(payload)
    with pytest.raises(ArtifactError, match="not a normpipe stats file"):
        Stats.load(tmp_path / "stats.json")
    from normpipe.train.loop import load_model

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.json").write_bytes(payload)
    (model_dir / "model.safetensors").write_bytes(payload)
    with pytest.raises(ArtifactError):
        load_model(model_dir)
    (model_dir / "model.json").write_text(
        json.dumps({"format": "normpipe.model", "version": 1, "architecture": {"kind": "mlp", "evil": 1}})
    )
    with pytest.raises(ArtifactError, match="do not match"):
        load_model(model_dir)
    architecture = {"kind": "mlp", "n_features": 2, "hidden": [4], "norm": "none", "dropout": 0.0}
    (model_dir / "model.json").write_text(
        json.dumps({"format": "normpipe.model", "version": 1, "architecture": architecture})
    )
    with pytest.raises(ArtifactError, match="do not match"):  # pickle bytes as the weights
        load_model(model_dir)
    assert not marker.exists()


@pytest.fixture(scope="module")
def artifact_text() -> str:
    import pyarrow as pa

    from normpipe.core.column import TableState
    from normpipe.scalers import parse_scaler

    table = pa.table({"x": np.arange(100.0), "y": np.linspace(-1, 1, 100)})
    state = TableState.from_block(table, ["x", "y"], 64)
    specs = {"x": parse_scaler("robust"), "y": parse_scaler("zscore")}
    stats = Stats.from_state(
        state,
        specs,
        {"x": "double", "y": "double"},
        64,
        {"source": "s", "root": "r", "files": [], "sha256": "0" * 64},
    )
    return stats.to_bytes().decode()


#: Values an edit may put in a key: every JSON type, and numbers no fit writes.
_ANY_JSON = st.one_of(
    st.none(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=10),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
_FRAME = pd.DataFrame(
    {
        "x": np.r_[np.arange(100.0), np.nan, -5.0, 250.0],
        "y": np.r_[np.linspace(-1, 1, 100), np.nan, 3.0, -7.0],
    }
)


def _consistent(stats: Stats) -> None:
    """What a loaded artifact promises: the transform maps NaN to NaN and finite values
    to finite values, and inverts back where the method is invertible."""
    out = stats.transform(_FRAME)
    for name, column in stats.columns.items():
        x, y = _FRAME[name].to_numpy(), out[name].to_numpy()
        np.testing.assert_array_equal(np.isnan(y), np.isnan(x), err_msg=name)
        assert np.isfinite(y[np.isfinite(x)]).all(), name
        if column.scaler.method in ("zscore", "robust", "maxabs"):
            # rounding is relative to the larger of the value and the parameters
            size = np.maximum(np.abs(x), max(abs(v) for v in column.scaler.params.values()))
            back = stats.inverse_column(name, y)
            finite = np.isfinite(x)
            assert (np.abs(back[finite] - x[finite]) <= 1e-12 * size[finite]).all(), name


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_artifacts_load_and_transform_consistently_or_fail_with_the_library_error(
    artifact_text: str, data: st.DataObject
) -> None:
    """Random bytes, and valid artifacts with random edits: either an ArtifactError, or
    an artifact whose transform is consistent. JSON edits drop the checksum (as files
    written before it was added), so they reach the checks beyond it."""
    kind = data.draw(st.sampled_from(["bytes", "splice", "json", "param"]))
    if kind == "bytes":
        blob = data.draw(st.binary(max_size=2000))
    elif kind == "splice":
        raw = artifact_text.encode()
        start = data.draw(st.integers(0, len(raw)))
        stop = data.draw(st.integers(start, min(len(raw), start + 50)))
        blob = raw[:start] + data.draw(st.binary(max_size=20)) + raw[stop:]
    else:
        doc = json.loads(artifact_text)
        doc.pop("checksum")
        column = doc["columns"][data.draw(st.sampled_from(["x", "y"]))]
        if kind == "json":
            column[data.draw(st.sampled_from(sorted(column)))] = data.draw(_ANY_JSON)
        else:
            params = column["params"]
            params[data.draw(st.sampled_from(sorted(params)))] = data.draw(_ANY_JSON)
        blob = json.dumps(doc).encode()
    try:
        stats = Stats.from_bytes(blob, "fuzz")
    except ArtifactError:
        return
    _consistent(stats)
