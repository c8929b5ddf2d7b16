"""Object storage end to end, against a real S3-compatible server on 127.0.0.1
(moto's standalone server, with authentication on), started by these tests."""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("s3fs")
boto3 = pytest.importorskip("boto3")

import normpipe  # noqa: E402
from normpipe.artifact import Stats  # noqa: E402
from normpipe.datagen import generate  # noqa: E402
from normpipe.errors import InputError, NormpipeError, OutputError  # noqa: E402

BIN = Path(sys.executable).parent
SECRET_MARK = "s3cr3t"  # moto makes the real secret; this marks a wrong one in the logs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A moto S3 server with authentication after four set-up calls: an IAM user with an
    S3 policy, its access key, and a bucket. Yields the environment to reach it."""
    executable = shutil.which("moto_server") or str(BIN / "moto_server")
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "4"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [executable, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out, env=env
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        anon = {"endpoint_url": endpoint, "region_name": "us-east-1"}
        keys = {"aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
        iam = boto3.client("iam", **anon, **keys)
        iam.create_user(UserName="normpipe")
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }
        iam.put_user_policy(UserName="normpipe", PolicyName="s3", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="normpipe")["AccessKey"]
        boto3.client("s3", **anon, **keys).create_bucket(Bucket="lake")
        yield {
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def aws(server: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The server's credentials in the standard environment variables."""
    for name, value in server.items():
        monkeypatch.setenv(name, value)
    return server


@pytest.fixture(scope="module")
def local_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("s3data") / "data"
    generate(root, 40_000, 4, seed=3, features=["normal", "lognormal_nan", "outliers"])
    return root


def _s3(env: dict[str, str]) -> Any:
    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1")


def upload(env: dict[str, str], local: Path, prefix: str) -> str:
    client = _s3(env)
    for path in sorted(local.rglob("*.parquet")):
        client.upload_file(str(path), "lake", f"{prefix}/{path.relative_to(local).as_posix()}")
    return f"s3://lake/{prefix}"


def keys(env: dict[str, str], prefix: str) -> list[str]:
    listing = _s3(env).list_objects_v2(Bucket="lake", Prefix=prefix + "/")
    return sorted(item["Key"][len(prefix) + 1 :] for item in listing.get("Contents", []))


def current_version(env: dict[str, str], prefix: str) -> str:
    """The prefix of a versioned output's current version, as a plain reader finds it."""
    pointer = json.loads(_s3(env).get_object(Bucket="lake", Key=f"{prefix}/_CURRENT")["Body"].read())
    return f"{prefix}/_versions/{pointer['version']}"


def test_fit_transform_from_and_to_s3_equals_local(
    aws: dict[str, str], local_data: Path, tmp_path: Path
) -> None:
    source = upload(aws, local_data, "raw")
    stats, manifest = normpipe.run(
        source, "s3://lake/normalized", exclude=["id"], cluster={"processes": False}
    )
    assert manifest["output"] == "s3://lake/normalized"
    assert "_STARTED" not in keys(aws, "normalized")
    version = current_version(aws, "normalized")
    assert manifest["location"] == f"s3://lake/{version}"
    names = keys(aws, version)
    assert "_SUCCESS" in names
    assert "_stats.json" in names
    assert sorted(f["path"] for f in manifest["files"]) == [n for n in names if n.endswith(".parquet")]
    local_stats, _ = normpipe.run(local_data, tmp_path / "out", exclude=["id"], cluster={"processes": False})
    for name, column in local_stats.columns.items():
        assert stats.summary(name).mean == pytest.approx(column.summary.mean, rel=1e-12)
    written = pd.read_parquet(  # a plain reader pointed at the current version
        f"s3://lake/{version}", storage_options={"endpoint_url": aws["AWS_ENDPOINT_URL"]}
    )
    expected = pd.read_parquet(tmp_path / "out")
    pd.testing.assert_frame_equal(
        written.sort_values("id", ignore_index=True), expected.sort_values("id", ignore_index=True)
    )
    # the artifact on S3 loads, and a transform reads it from there
    assert manifest["stats"] == f"s3://lake/{version}/_stats.json"
    loaded = Stats.load(manifest["stats"])
    assert loaded.sha256 == manifest["stats_sha256"]
    from normpipe.report import write_report

    assert write_report(loaded, "s3://lake/reports/r.html") == "s3://lake/reports/r.html"
    assert keys(aws, "reports") == ["r.html"]
    # the output stands for its artifact (the current version's _stats.json)
    again = normpipe.transform(
        source, "s3://lake/normalized", "s3://lake/again", cluster={"processes": False}
    )
    assert again["stats_sha256"] == manifest["stats_sha256"]
    assert again["rows_out"] == 40_000
    # a reader accepts the output (its manifest matches), and refuses it once a part is gone
    assert normpipe.fit("s3://lake/normalized", exclude=["id"], cluster={"processes": False}).rows == 40_000
    _s3(aws).delete_object(
        Bucket="lake", Key=f"{version}/{names[-1]}" if names[-1].endswith(".parquet") else "x"
    )
    with pytest.raises(InputError, match="is listed in _SUCCESS but missing"):
        normpipe.fit("s3://lake/normalized", exclude=["id"], cluster={"processes": False})


def test_overwrite_rules_on_s3(aws: dict[str, str], local_data: Path) -> None:
    source = upload(aws, local_data, "raw2")
    normpipe.run(source, "s3://lake/out2", exclude=["id"], cluster={"processes": False})
    with pytest.raises(OutputError, match="already exists; pass --overwrite"):
        normpipe.run(source, "s3://lake/out2", exclude=["id"], cluster={"processes": False})
    manifest = normpipe.run(
        source, "s3://lake/out2", exclude=["id"], overwrite=True, cluster={"processes": False}
    )[1]
    assert manifest["rows_out"] == 40_000
    _s3(aws).put_object(Bucket="lake", Key="theirs/data.csv", Body=b"a,b\n")
    with pytest.raises(OutputError, match="is not a normpipe output"):
        normpipe.run(source, "s3://lake/theirs", exclude=["id"], overwrite=True, cluster={"processes": False})
    assert keys(aws, "theirs") == ["data.csv"]  # never touched
    with pytest.raises(OutputError, match="lies inside the input"):
        normpipe.run(source, source + "/out", exclude=["id"], cluster={"processes": False})


def _killed_midway(command: list[str], prefix: str, env: dict[str, str], parts: int = 3) -> None:
    """Start ``command`` with a 2 s lease, SIGKILL it (client and workers) once ``parts``
    new Parquet objects are below ``prefix``."""
    before = {k for k in keys(env, prefix) if k.endswith(".parquet")}
    short = {**os.environ, "NORMPIPE_LEASE_SECONDS": "2"}  # the killed run's lease runs out soon
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, env=short
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if len({k for k in keys(env, prefix) if k.endswith(".parquet")} - before) >= parts:
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _etags(env: dict[str, str], prefix: str) -> dict[str, str]:
    return {k: _s3(env).head_object(Bucket="lake", Key=f"{prefix}/{k}")["ETag"] for k in keys(env, prefix)}


def test_interrupted_writes_leave_the_previous_version_readable_and_the_next_run_succeeds(
    aws: dict[str, str], tmp_path: Path
) -> None:
    """A first write killed midway leaves no version (readers refuse the prefix); a
    versioned overwrite killed midway leaves the previous version current, whole and
    readable; once the lease runs out the next run takes over, removes the abandoned
    version and commits."""
    big = tmp_path / "big"
    generate(big, 400_000, 40, seed=4, features=["normal", "uniform"])
    source = upload(aws, big, "raw3")
    command = [
        str(BIN / "normpipe"),
        "run",
        source,
        "-o",
        "s3://lake/out3",
        "--exclude",
        "id",
        "--workers",
        "1",
    ]
    _killed_midway(command, "out3", aws)
    left = keys(aws, "out3")
    assert "_CURRENT" not in left
    assert "_STARTED" in left
    with pytest.raises(InputError, match="an incomplete normpipe output"):
        normpipe.fit("s3://lake/out3", cluster={"processes": False})
    time.sleep(2.5)  # the dead run's lease has expired: the next run takes the prefix over
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    after = keys(aws, "out3")
    assert "_STARTED" not in after
    first = current_version(aws, "out3")
    assert {k.split("/")[1] for k in after if k.startswith("_versions/")} == {first.split("/")[-1]}
    manifest = json.loads(_s3(aws).get_object(Bucket="lake", Key=f"{first}/_SUCCESS")["Body"].read())
    parts = [k for k in keys(aws, first) if k.endswith(".parquet")]
    assert sorted(f["path"] for f in manifest["files"]) == parts
    assert manifest["rows_out"] == 400_000

    # a versioned overwrite, killed midway: the previous version stays current and whole
    before = _etags(aws, first)
    _killed_midway([*command, "--overwrite"], "out3", aws)
    assert current_version(aws, "out3") == first
    assert _etags(aws, first) == before
    assert normpipe.fit("s3://lake/out3", cluster={"processes": False}).rows == 400_000  # no refusal
    plain = pd.read_parquet(f"s3://lake/{first}", storage_options={"endpoint_url": aws["AWS_ENDPOINT_URL"]})
    assert len(plain) == 400_000
    time.sleep(2.5)
    done = subprocess.run([*command, "--overwrite"], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    second = current_version(aws, "out3")
    assert second > first
    versions = {k.split("/")[1] for k in keys(aws, "out3") if k.startswith("_versions/")}
    assert versions == {first.split("/")[-1], second.split("/")[-1]}  # the killed run's version is gone
    assert _etags(aws, first) == before  # the previous version is kept (keep_versions: 2)


def test_two_writers_on_one_prefix_one_wins_the_other_fails_at_once(
    aws: dict[str, str], local_data: Path
) -> None:
    """The lease is a conditional create (If-None-Match, which moto honours): while one
    run holds s3://lake/out6, a second fails at once naming it and touches nothing; once
    the holder is done, a run succeeds."""
    from normpipe.lease import hold_lease
    from normpipe.storage import locate

    source = upload(aws, local_data, "raw6")
    normpipe.run(source, "s3://lake/out6", exclude=["id"], cluster={"processes": False})
    before = {k: _s3(aws).head_object(Bucket="lake", Key=f"out6/{k}")["ETag"] for k in keys(aws, "out6")}
    with hold_lease(locate("s3://lake/out6"), term=60) as lease:
        with pytest.raises(OutputError) as err:
            normpipe.run(
                source, "s3://lake/out6", exclude=["id"], overwrite=True, cluster={"processes": False}
            )
        assert f"run {lease.run[:12]}" in str(err.value)
        assert "another normpipe run is writing s3://lake/out6" in str(err.value)
        after = {k: _s3(aws).head_object(Bucket="lake", Key=f"out6/{k}")["ETag"] for k in keys(aws, "out6")}
        assert {k: v for k, v in after.items() if k != "_STARTED"} == before  # the output is intact
    _s3(aws).delete_object(Bucket="lake", Key="out6/_STARTED")  # the holder finishes
    _, manifest = normpipe.run(
        source, "s3://lake/out6", exclude=["id"], overwrite=True, cluster={"processes": False}
    )
    assert manifest["rows_out"] == 40_000
    assert "_STARTED" not in keys(aws, "out6")


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "normpipe"), *args], capture_output=True, text=True, timeout=300, check=False, env=env
    )


def test_wrong_credentials_and_missing_bucket_are_one_line_without_secrets(
    aws: dict[str, str], local_data: Path, tmp_path: Path
) -> None:
    source = upload(aws, local_data, "raw4")
    wrong = {**os.environ, **aws, "AWS_SECRET_ACCESS_KEY": SECRET_MARK, "AWS_ACCESS_KEY_ID": "AKIAWRONG"}
    for args in (
        ("fit", source, "--stats", str(tmp_path / "s.json")),
        ("run", str(local_data), "-o", "s3://lake/x"),
    ):
        bad = _cli(*args, env=wrong)
        assert bad.returncode == 2, bad.stderr
        assert bad.stderr.count("\n") == 1, bad.stderr
        assert bad.stderr.startswith("error: ")
        assert "access denied" in bad.stderr or "credentials" in bad.stderr
        assert SECRET_MARK not in bad.stderr + bad.stdout
    right = {**os.environ, **aws}
    missing = _cli("run", str(local_data), "-o", "s3://no-such-bucket/out", "--exclude", "id", env=right)
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1, missing.stderr
    assert "s3://no-such-bucket/out: the bucket does not exist" in missing.stderr
    gone = _cli("fit", "s3://no-such-bucket/data", "--stats", str(tmp_path / "t.json"), env=right)
    assert gone.returncode == 2
    assert gone.stderr.count("\n") == 1, gone.stderr


def test_secrets_from_storage_options_never_reach_outputs_or_logs(
    server: dict[str, str], local_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Credentials given in the config (not the environment) work, and appear in no
    artifact, manifest, report, log line or JSON dump of the config."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", server["AWS_ENDPOINT_URL"])
    secret = server["AWS_SECRET_ACCESS_KEY"]
    options = {"key": server["AWS_ACCESS_KEY_ID"], "secret": secret}
    config = tmp_path / "s3.yaml"
    config.write_text(
        f"source: {local_data}\noutput: s3://lake/secretive\nexclude: [id]\nreport: true\n"
        f"storage_options:\n  key: {options['key']}\n  secret: {secret}\n"
        "cluster:\n  processes: false\n  workers: 1\n"
    )
    result = _cli("run", "--config", str(config), env={**os.environ})
    assert result.returncode == 0, result.stderr
    assert secret not in result.stdout + result.stderr
    version = current_version(server, "secretive")
    for name in ("../../_CURRENT", "_stats.json", "_SUCCESS", "_report.html"):
        key = posixpath.normpath(f"{version}/{name}")
        body = _s3(server).get_object(Bucket="lake", Key=key)["Body"].read().decode()
        assert secret not in body
    from normpipe.config import load_config

    assert secret not in load_config(config).model_dump_json()


def test_a_missing_artifact_on_s3_is_one_clear_error(aws: dict[str, str]) -> None:
    with pytest.raises(NormpipeError, match=r"s3://lake/nothing-here\.json: not found"):
        Stats.load("s3://lake/nothing-here.json")


def test_train_from_and_to_s3(aws: dict[str, str], tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from normpipe.config import TrainRunConfig
    from normpipe.train.loop import load_model
    from normpipe.train.runs import train_from_config

    raw = tmp_path / "raw"
    generate(raw, 20_000, 2, seed=8, features=["normal", "uniform", "outliers"])
    source = upload(aws, raw, "train-raw")
    normpipe.run(source, "s3://lake/train-norm", exclude=["id"], cluster={"processes": False})
    config = TrainRunConfig.model_validate(
        {
            "data": "s3://lake/train-norm",
            "target": "normal",
            "features": ["uniform", "outliers"],
            "output": "s3://lake/model",
            "model": {"hidden": [8]},
            "training": {"max_epochs": 2, "batch_size": 512},
        }
    )
    result, where, stats = train_from_config(config)
    assert where == "s3://lake/model"
    assert stats is not None  # found as s3://lake/train-norm/_stats.json
    assert sorted(keys(aws, "model")) == ["_SUCCESS", "model.json", "model.safetensors", "stats.json"]
    model, card, loaded = load_model("s3://lake/model")
    assert card["stats_sha256"] == stats.sha256
    assert loaded is not None
    assert loaded.sha256 == stats.sha256
    assert np.isfinite(result.metrics["rmse"])
    assert sum(p.numel() for p in model.parameters()) > 0


def test_cli_update_keeps_an_artifact_url(aws: dict[str, str], local_data: Path, tmp_path: Path) -> None:
    """`fit --update s3://...` reads and writes the artifact on S3 (not a local 's3:' folder)."""
    from tests.test_cli import invoke

    config = tmp_path / "local.yaml"
    config.write_text("cluster: {processes: false, workers: 1}\nexclude: [id]\n")
    files = sorted(local_data.rglob("*.parquet"))
    code, _, err = invoke("fit", files[0], "--stats", "s3://lake/upd/stats.json", "--config", config)
    assert code == 0, err
    config.write_text("cluster: {processes: false, workers: 1}\n")
    code, out, err = invoke("fit", files[1], "--update", "s3://lake/upd/stats.json", "--config", config)
    assert code == 0, err
    assert "stats: s3://lake/upd/stats.json" in out
    assert not (Path.cwd() / "s3:").exists()
    merged = Stats.load("s3://lake/upd/stats.json")
    assert merged.rows == sum(len(pd.read_parquet(f)) for f in files[:2])


def _days(root: Path, days: range, rows: int = 10_000, files: int = 2) -> None:
    for day in days:
        generate(root / f"day={day}", rows, files, seed=day, features=["normal", "uniform"])


def test_appends_on_s3_add_parts_to_the_current_version_only(aws: dict[str, str], tmp_path: Path) -> None:
    """An append writes the new parts into the current version and replaces its manifest
    last: the parts already there keep their ETags, and the output equals one full
    transform with the same artifact."""
    local = tmp_path / "data"
    _days(local, range(1, 2))
    source = upload(aws, local, "grow")
    stats = normpipe.fit(source, exclude=["id"], cluster={"processes": False})
    first = normpipe.transform(source, stats, "s3://lake/grown", append=True, cluster={"processes": False})
    assert first["written"] == 2
    version = current_version(aws, "grown")
    before = _etags(aws, version)
    _days(local, range(2, 3))
    source = upload(aws, local, "grow")
    second = normpipe.transform(source, stats, "s3://lake/grown", append=True, cluster={"processes": False})
    assert second["written"] == 2
    assert current_version(aws, "grown") == version  # no new version for an append
    after = _etags(aws, version)
    assert {k: after[k] for k in before if k != "_SUCCESS"} == {
        k: v for k, v in before.items() if k != "_SUCCESS"
    }
    assert sorted(k for k in after if k.endswith(".parquet")) == [
        "day=1/part-00000.parquet",
        "day=1/part-00001.parquet",
        "day=2/part-00000.parquet",
        "day=2/part-00001.parquet",
    ]
    full = normpipe.transform(source, stats, tmp_path / "full", cluster={"processes": False})
    ours = normpipe.fit("s3://lake/grown", exclude=["id"], cluster={"processes": False})
    assert ours.rows == full["rows_out"] == 20_000
    written = pd.read_parquet(
        f"s3://lake/{version}", storage_options={"endpoint_url": aws["AWS_ENDPOINT_URL"]}
    ).sort_values("id", ignore_index=True)
    expected = pd.read_parquet(tmp_path / "full").sort_values("id", ignore_index=True)
    pd.testing.assert_frame_equal(written, expected)


def test_a_killed_append_on_s3_leaves_the_version_as_it_was(aws: dict[str, str], tmp_path: Path) -> None:
    """SIGKILL during an append: the version's manifest and parts are untouched and it
    reads as before (the new parts are not listed); the next append removes them and
    commits."""
    local = tmp_path / "data"
    _days(local, range(1, 2))
    source = upload(aws, local, "grow2")
    stats_path = tmp_path / "s.json"
    normpipe.fit(source, stats=str(stats_path), exclude=["id"], cluster={"processes": False})
    normpipe.transform(source, str(stats_path), "s3://lake/grown2", append=True, cluster={"processes": False})
    version = current_version(aws, "grown2")
    before = _etags(aws, version)
    generate(local / "day=2", 400_000, 40, seed=2, features=["normal", "uniform"])
    source = upload(aws, local, "grow2")
    command = [
        str(BIN / "normpipe"),
        "transform",
        source,
        "--stats",
        str(stats_path),
        "-o",
        "s3://lake/grown2",
    ]
    command += ["--append", "--workers", "1"]
    _killed_midway(command, "grown2", aws)
    after = _etags(aws, version)
    assert {k: after[k] for k in before} == before  # the manifest and every listed part
    assert any(k.startswith("day=2/") for k in after)  # what the killed run wrote: not listed
    assert normpipe.fit("s3://lake/grown2", exclude=["id"], cluster={"processes": False}).rows == 10_000
    time.sleep(2.5)
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert normpipe.fit("s3://lake/grown2", exclude=["id"], cluster={"processes": False}).rows == 410_000
    manifest = json.loads(_s3(aws).get_object(Bucket="lake", Key=f"{version}/_SUCCESS")["Body"].read())
    listed = sorted(f["path"] for f in manifest["files"])
    assert listed == sorted(k for k in keys(aws, version) if k.endswith(".parquet"))  # no stray part


def test_retention_keeps_the_newest_versions_only(aws: dict[str, str], local_data: Path) -> None:
    source = upload(aws, local_data, "raw7")
    seen = []
    for _ in range(4):
        normpipe.run(
            source,
            "s3://lake/out7",
            exclude=["id"],
            overwrite=True,
            keep_versions=2,
            cluster={"processes": False},
        )
        seen.append(current_version(aws, "out7").split("/")[-1])
    assert seen == sorted(seen)
    assert len(set(seen)) == 4
    versions = {k.split("/")[1] for k in keys(aws, "out7") if k.startswith("_versions/")}
    assert versions == set(seen[-2:])  # the current one and the one before it
    normpipe.run(
        source,
        "s3://lake/out7",
        exclude=["id"],
        overwrite=True,
        keep_versions=1,
        cluster={"processes": False},
    )
    assert {k.split("/")[1] for k in keys(aws, "out7") if k.startswith("_versions/")} == {
        current_version(aws, "out7").split("/")[-1]
    }


def test_a_run_that_lost_its_lease_commits_nothing(aws: dict[str, str], local_data: Path) -> None:
    """The lease is read afresh before the commit point (an append's manifest, a new
    version's pointer): a run whose lease another run took writes neither."""
    from normpipe.commit import commit
    from normpipe.storage import locate

    source = upload(aws, local_data, "raw8")
    normpipe.run(source, "s3://lake/out8", exclude=["id"], cluster={"processes": False})
    version = current_version(aws, "out8")
    before = _etags(aws, "out8")
    taken = json.dumps({"run": "0" * 32, "host": "elsewhere", "pid": 1, "expires": time.time() + 60})

    def write_after_a_takeover(append: bool) -> None:
        with commit(locate("s3://lake/out8"), overwrite=True, append=append, keep_versions=2) as target:
            target.where.child("extra.parquet").write_bytes(b"PAR1")
            _s3(aws).put_object(Bucket="lake", Key="out8/_STARTED", Body=taken.encode())  # a takeover
            target.write_manifest([], "0" * 64, source)

    for append in (True, False):
        with pytest.raises(OutputError, match="took the output over"):
            write_after_a_takeover(append)
        _s3(aws).delete_object(Bucket="lake", Key="out8/_STARTED")
        assert current_version(aws, "out8") == version
        after = _etags(aws, "out8")
        assert {k: after[k] for k in before} == before  # the pointer and the version's manifest
