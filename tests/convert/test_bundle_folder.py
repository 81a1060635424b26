"""A bundle folder written by convert has the mode the user's umask gives (0755 under 022), not mkdtemp's 0700."""

from __future__ import annotations

import os
import stat

from edgekit.converters.bundle_writer import staged_bundle


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_converted_bundle_folder_follows_the_umask(bundle):
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o777 & ~_umask()


def test_staging_folder_follows_another_umask(tmp_path):
    old = os.umask(0o027)
    try:
        with staged_bundle(tmp_path / "b", force=False) as staging:
            (staging / "manifest.json").write_text("{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "b").stat().st_mode) == 0o750
    assert [p.name for p in tmp_path.iterdir()] == ["b"]  # the staging folder was renamed, nothing left over
