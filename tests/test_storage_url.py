"""The one storage-URL rule (:func:`tuner.config.storage_url.resolve_storage_url`) for ``study.storage``
in a workload file and for ``--storage`` / ``STORAGE`` on the command line.

The tables' expected URLs are written out by hand. Their folders (``/proj``, ``/home/me``) need not exist:
resolving a path that does not exist changes nothing but ``..`` and ``.``. The end-to-end cases at the
bottom make real files through ``tuner optimize`` and check where they landed and what kind they are.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from _pg import run, sim_workload

from tuner.config.spec import load_spec
from tuner.config.storage_url import resolve_storage_url
from tuner.errors import StorageError
from tuner.report.load import parse_ref

#: a workload file's folder (``/proj/workloads/w.yaml``) and the directory a user types commands in
YAML_DIR = Path("/proj/workloads")
CWD = Path("/home/me/work")

FROM_YAML = [
    ("runs/x.log", "journal:/proj/workloads/runs/x.log"),
    ("runs/x.journal", "journal:/proj/workloads/runs/x.journal"),
    ("runs/x.db", "sqlite:////proj/workloads/runs/x.db"),
    ("x", "sqlite:////proj/workloads/x"),
    ("../studies/a.db", "sqlite:////proj/studies/a.db"),
    ("./a/./b/../c.db", "sqlite:////proj/workloads/a/c.db"),
    ("/var/lib/tuner/a.db", "sqlite:////var/lib/tuner/a.db"),
    ("/var/lib/tuner/a.log", "journal:/var/lib/tuner/a.log"),
    ("journal:j/s.log", "journal:/proj/workloads/j/s.log"),
    ("journal:plain", "journal:/proj/workloads/plain"),  # journal: needs no suffix
    ("journal:../j.db", "journal:/proj/j.db"),  # journal: wins over the .db suffix
    ("journal:/nfs/studies/s.log", "journal:/nfs/studies/s.log"),
    ("sqlite:///rel.db", "sqlite:///rel.db"),  # a URL is used as written, not re-anchored
    ("sqlite:////abs/a.db", "sqlite:////abs/a.db"),
    ("sqlite:///x.log", "sqlite:///x.log"),  # a URL with a .log name stays an SQLite URL
    ("postgresql+psycopg://tuner:s3cret@db-host:5432/tuner", "postgresql+psycopg://tuner:s3cret@db-host:5432/tuner"),
    ("mysql+pymysql://u@h/db", "mysql+pymysql://u@h/db"),
    ("  runs/x.db  ", "sqlite:////proj/workloads/runs/x.db"),  # surrounding blanks are not part of a path
]

FROM_CLI = [
    ("runs/x.log", "journal:/home/me/work/runs/x.log"),
    ("runs/x.journal", "journal:/home/me/work/runs/x.journal"),
    ("runs/x.db", "sqlite:////home/me/work/runs/x.db"),
    ("study.sqlite", "sqlite:////home/me/work/study.sqlite"),
    ("../a.db", "sqlite:////home/me/a.db"),
    ("journal:j/s.log", "journal:/home/me/work/j/s.log"),
    ("journal:/nfs/studies/s.log", "journal:/nfs/studies/s.log"),
    ("sqlite:///rel.db", "sqlite:///rel.db"),
    ("postgresql+psycopg://tuner:s3cret@db-host/tuner", "postgresql+psycopg://tuner:s3cret@db-host/tuner"),
]

HOME = [
    ("~/s.db", "sqlite:////home/tester/s.db"),
    ("~/runs/s.log", "journal:/home/tester/runs/s.log"),
    ("journal:~/j.log", "journal:/home/tester/j.log"),
    ("~", "sqlite:////home/tester"),
]


@pytest.mark.parametrize(("text", "expected"), FROM_YAML)
def test_study_storage_resolves_against_the_workload_folder(text: str, expected: str) -> None:
    assert resolve_storage_url(text, base_dir=YAML_DIR, default="studies/w.db") == expected


@pytest.mark.parametrize(("text", "expected"), FROM_CLI)
def test_storage_option_resolves_against_the_current_directory(text: str, expected: str) -> None:
    assert resolve_storage_url(text, base_dir=CWD) == expected


@pytest.mark.parametrize(("text", "expected"), HOME)
@pytest.mark.parametrize("base_dir", [YAML_DIR, CWD])
def test_tilde_is_the_home_folder_wherever_it_is_written(
    text: str, expected: str, base_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", "/home/tester")
    assert resolve_storage_url(text, base_dir=base_dir) == expected


def test_the_same_relative_log_path_is_a_journal_both_ways_anchored_differently() -> None:
    assert resolve_storage_url("runs/x.log", base_dir=YAML_DIR) == "journal:/proj/workloads/runs/x.log"
    assert resolve_storage_url("runs/x.log", base_dir=CWD) == "journal:/home/me/work/runs/x.log"


@pytest.mark.parametrize(
    ("base_dir", "root", "expected"),
    [
        (Path("/proj/workloads"), None, "sqlite:////proj/studies/w.db"),  # beside workloads/, not inside it
        (Path("/proj/configs"), None, "sqlite:////proj/configs/studies/w.db"),
        (Path("/proj"), None, "sqlite:////proj/studies/w.db"),
        (Path("/elsewhere"), Path("/proj/workloads"), "sqlite:////proj/studies/w.db"),  # root anchors the default
        (Path("/elsewhere"), Path("/proj/other"), "sqlite:////proj/other/studies/w.db"),
    ],
)
def test_no_storage_is_the_default_in_the_project_folder(base_dir: Path, root: Path | None, expected: str) -> None:
    assert resolve_storage_url(None, base_dir=base_dir, default="studies/w.db", root=root) == expected


def test_no_storage_and_no_default_or_an_empty_one_is_a_storage_error() -> None:
    with pytest.raises(StorageError, match="no study storage"):
        resolve_storage_url(None, base_dir=CWD)
    with pytest.raises(StorageError, match="empty"):
        resolve_storage_url("   ", base_dir=CWD)
    with pytest.raises(StorageError, match="journal:PATH"):
        resolve_storage_url("journal:", base_dir=CWD)


# ------------------------------------------------------------------------------ through the callers


def _workload(folder: Path, storage: str | None) -> Path:
    study = {"trials": 1, "sampler": "grid"}
    if storage is not None:
        study["storage"] = storage
    return sim_workload(folder, "w", search={"pool_size": [1, 2]}, study=study)


def test_a_loaded_workload_resolves_study_storage_next_to_its_file(tmp_path: Path) -> None:
    proj = tmp_path.resolve()
    assert load_spec(_workload(proj, "runs/x.log")).storage_url() == f"journal:{proj}/workloads/runs/x.log"
    assert load_spec(_workload(proj, "runs/x.db")).storage_url() == f"sqlite:///{proj}/workloads/runs/x.db"
    assert load_spec(_workload(proj, "journal:j")).storage_url() == f"journal:{proj}/workloads/j"
    assert load_spec(_workload(proj, None)).storage_url() == f"sqlite:///{proj}/studies/w.db"


def test_a_storage_argument_resolves_against_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path.resolve()
    monkeypatch.chdir(cwd)
    assert parse_ref("runs/x.log").url == f"journal:{cwd}/runs/x.log"
    assert parse_ref("journal:runs/x").url == f"journal:{cwd}/runs/x"
    assert parse_ref("runs/x.db").url == f"sqlite:///{cwd}/runs/x.db"
    ref = parse_ref("runs/x.db:w@tag")
    assert (ref.url, ref.study) == (f"sqlite:///{cwd}/runs/x.db", "w@tag")


def _is_journal(path: Path) -> bool:
    first = path.read_text().splitlines()[0]
    return "op_code" in json.loads(first)


def _is_sqlite(path: Path) -> bool:
    return path.read_bytes()[:16] == b"SQLite format 3\x00"


def test_optimize_puts_runs_x_log_beside_the_file_from_yaml_and_under_the_cwd_from_the_option(
    tmp_path: Path,
) -> None:
    proj = tmp_path.resolve()
    _workload(proj, "runs/x.log")

    from_yaml = run("optimize", "workloads/w.yaml", cwd=proj)
    assert from_yaml.returncode == 0, from_yaml.stderr
    assert _is_journal(proj / "workloads" / "runs" / "x.log")
    assert not (proj / "runs").exists()

    from_option = run("optimize", "workloads/w.yaml", "--storage", "runs/x.log", cwd=proj)
    assert from_option.returncode == 0, from_option.stderr
    assert _is_journal(proj / "runs" / "x.log")

    # the read commands take the same relative path, from the same directory
    listed = run("studies", "runs/x.log", "--json", cwd=proj)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert len(rows) == 1 and rows[0]["study"].startswith("w@")
    assert rows[0]["trials"]["complete"] == 1


def test_optimize_with_a_plain_path_makes_an_sqlite_file_and_the_default_lands_in_studies(tmp_path: Path) -> None:
    proj = tmp_path.resolve()
    _workload(proj, None)

    default = run("optimize", "workloads/w.yaml", cwd=proj)
    assert default.returncode == 0, default.stderr
    assert _is_sqlite(proj / "studies" / "w.db")

    plain = run("optimize", "workloads/w.yaml", "--storage", "out/s.db", cwd=proj)
    assert plain.returncode == 0, plain.stderr
    db = proj / "out" / "s.db"
    assert _is_sqlite(db)
    with sqlite3.connect(db) as conn:
        names = [r[0] for r in conn.execute("SELECT study_name FROM studies")]
    assert len(names) == 1 and names[0].startswith("w@")
