"""Checked specs are reused while a file is unchanged, from memory and from disk."""

from __future__ import annotations

import os

from nuro_ml.pipelines import loader
from nuro_ml.pipelines.loader import check_file, compile_file

SPEC = """\
dag_id: cached
start_date: 2026-11-01
stages:
  a: {operator: bash, args: {bash_command: "echo %s"}}
"""


def _forget_memory() -> None:
    loader._memory.clear()


def test_unchanged_file_is_served_from_disk_in_a_fresh_process(write_spec, _private_spec_cache):
    path = write_spec(SPEC % "one")
    first = check_file(path)
    assert first.plan is not None and first.document is not None
    assert len(list(_private_spec_cache.iterdir())) == 1

    _forget_memory()
    second = check_file(path)

    assert second.document is None  # not parsed again
    assert second.plan == first.plan
    dag, issues = compile_file(path)
    assert issues == ()
    assert dag.get_task("a").bash_command == "echo one"


def test_an_edited_file_is_checked_again(write_spec):
    path = write_spec(SPEC % "one")
    check_file(path)
    _forget_memory()

    path.write_text(SPEC % "two, longer")
    dag, _ = compile_file(path)

    assert dag.get_task("a").bash_command == "echo two, longer"


def test_an_edit_keeping_the_size_is_seen_through_the_modification_time(write_spec):
    path = write_spec(SPEC % "one")
    check_file(path)
    stat = path.stat()

    path.write_text(SPEC % "two")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    dag, _ = compile_file(path)

    assert dag.get_task("a").bash_command == "echo two"


def test_broken_specs_are_not_cached_on_disk(write_spec, _private_spec_cache):
    path = write_spec("dag_id: broken\nstages: {}\n")

    assert check_file(path).issues
    assert list(_private_spec_cache.iterdir()) == []


def test_a_corrupt_cache_entry_is_ignored(write_spec, _private_spec_cache):
    path = write_spec(SPEC % "one")
    check_file(path)
    [entry] = list(_private_spec_cache.iterdir())
    entry.write_bytes(b"not a pickle")
    _forget_memory()

    dag, issues = compile_file(path)

    assert issues == ()
    assert dag.get_task("a").bash_command == "echo one"


def test_placeholder_values_are_part_of_the_key(write_spec, monkeypatch, tmp_path):
    path = write_spec(SPEC.replace('"echo %s"', '"ls ${data_dir}"'))
    monkeypatch.setenv("NURO_ML_DATA_DIR", str(tmp_path / "first"))
    first, _ = compile_file(path)
    monkeypatch.setenv("NURO_ML_DATA_DIR", str(tmp_path / "second"))
    _forget_memory()
    second, _ = compile_file(path)

    assert first.get_task("a").bash_command == f"ls {tmp_path / 'first'}"
    assert second.get_task("a").bash_command == f"ls {tmp_path / 'second'}"
