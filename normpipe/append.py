"""Appending to a normalized output: which input files it holds already.

An output's ``_SUCCESS`` manifest records where its inputs' paths start (``input_root``),
each part's input size (``input_bytes``) and the artifact's sha256: together the identity
of each file it holds. An append (:func:`normpipe.transform` with ``append``) writes the
others, with the same artifact, and the commit protocol (:mod:`normpipe.commit`) adds
them to the manifest.
"""

from __future__ import annotations

import posixpath
from dataclasses import replace

from normpipe.commit import Manifest
from normpipe.dataset import Dataset
from normpipe.errors import InputError, OutputError
from normpipe.storage import Location

__all__ = ["above_partitions", "unheld"]


def unheld(dataset: Dataset, held: Manifest, sha256: str, output: Location) -> Dataset:
    """The files of ``dataset`` that an output with manifest ``held`` does not hold yet,
    with their paths below the output's input root (where the output's paths start).

    A file is held when its path below that root is listed with the same input size.

    Raises
    ------
    OutputError
        The output was written with another artifact (appending must not mix two), or
        without its inputs' identities.
    InputError
        A held file changed size (appending adds files; it does not replace them), or a
        file lies outside the output's input root.
    """
    if held.stats_sha256 != sha256:
        raise OutputError(
            f"{output} was written with stats artifact {str(held.stats_sha256)[:12]}…, not {sha256[:12]}…; "
            "an append uses the artifact the output was written with: pass that one, rewrite the "
            "output without --append (a refit), or append to another --output"
        )
    if held.input_root is None or any(entry.input_bytes is None for entry in held.files):
        raise OutputError(
            f"{output} does not record its inputs' identities (an earlier normpipe wrote it); "
            "rewrite it once without --append"
        )
    root = held.input_root.rstrip("/")
    sizes = {entry.path: entry.input_bytes for entry in held.files}
    fresh = []
    for file in dataset.files:
        if not file.path.startswith(root + "/"):
            raise InputError(
                f"{file.path} is not below {root}, the input of {output}; append files of that dataset"
            )
        relpath = file.path[len(root) + 1 :]
        if relpath not in sizes:
            fresh.append(replace(file, relpath=relpath))
        elif sizes[relpath] != file.size:
            raise InputError(
                f"{file.path} has {file.size:,} bytes, {sizes[relpath]:,} when {output} was written; "
                "an append adds new files, it does not replace changed ones: rewrite the output "
                "without --append"
            )
    return replace(dataset, root=root, files=tuple(fresh))


def above_partitions(dataset: Dataset) -> Dataset:
    """``dataset`` with its root above the hive partition directories it ends in
    (``data/day=1`` is rooted at ``data``, its files' paths keep ``day=1/``), so that an
    output appended to night after night holds each day's partition as it is named."""
    root = dataset.root.rstrip("/")
    while "=" in posixpath.basename(root) and posixpath.dirname(root) not in ("", root):
        root = posixpath.dirname(root)
    if root == dataset.root.rstrip("/"):
        return dataset
    files = tuple(replace(f, relpath=f.path[len(root) + 1 :]) for f in dataset.files)
    return replace(dataset, root=root, files=files)
