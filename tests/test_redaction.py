"""Passwords in storage URLs are never shown or stored: :func:`redact` and :func:`scrub`, then every
command that prints a storage URL, run as a user runs it (``python -m tuner ...``) against a real
PostgreSQL (see ``tests/_pg.py``: skipped without a server outside CI, failed without one in CI).

Failing connections use the test server's URL with a WRONG password (the server really refuses it);
the stored-attributes case uses the right one, written into the workload file's ``study.storage``.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from _pg import _plain, load_study, one_line_error, password_of, run, sim_workload, start, with_database

from tuner.study.storage import redact, scrub

# ------------------------------------------------------------------------------------------ redact


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql+psycopg://tuner:s3cret@db-host/tuner", "postgresql+psycopg://tuner:***@db-host/tuner"),
        ("postgresql://tuner:s3cret@db-host:5432/tuner", "postgresql://tuner:***@db-host:5432/tuner"),
        # percent-encoded: p@ss:w0rd/x
        ("postgresql://tuner:p%40ss%3Aw0rd%2Fx@db/tuner", "postgresql://tuner:***@db/tuner"),
        # characters SQLAlchemy takes as part of the password when not encoded (':' and '/')
        ("mysql+pymysql://u:pa:ss/x@h/db", "mysql+pymysql://u:***@h/db"),
        ("postgresql://u:@h/db", "postgresql://u:***@h/db"),  # an empty password shows as *** too
        (
            "cannot copy postgresql://a:pw1@h1/d1 to mysql+pymysql://b:pw2@h2/d2 (and back)",
            "cannot copy postgresql://a:***@h1/d1 to mysql+pymysql://b:***@h2/d2 (and back)",
        ),
        ("url='postgresql://u:pw@h/db'", "url='postgresql://u:***@h/db'"),
        ('{"storage": "postgresql://u:pw@h/db"}', '{"storage": "postgresql://u:***@h/db"}'),
        (
            "study:\n  storage: postgresql://u:pw@h/db\n  trials: 3\n",
            "study:\n  storage: postgresql://u:***@h/db\n  trials: 3\n",
        ),
    ],
)
def test_redact_replaces_every_password(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "postgresql+psycopg://tuner@db-host/tuner",  # no password
        "postgresql://db-host/tuner",  # no user either
        "sqlite:////tmp/studies/a.db",
        "journal:/nfs/studies/a.log",
        "no url here: user:pass but no scheme",
        "http://example.org/a:b@c",  # ':' after the first '/' is a path, not a password
    ],
)
def test_redact_leaves_text_without_a_password_alone(text: str) -> None:
    assert redact(text) == text


def test_redact_is_stable_on_its_own_output() -> None:
    once = redact("postgresql://u:pw@h/db")
    assert once == "postgresql://u:***@h/db"
    assert redact(once) == once


# ------------------------------------------------------------------------------------------- scrub

URL = "postgresql+psycopg://tuner:hunter2-xyz@db-host/tuner"


def test_scrub_removes_a_password_a_driver_message_echoes() -> None:
    message = 'FATAL: password "hunter2-xyz" is wrong; retrying with hunter2-xyz'
    assert scrub(message, URL) == 'FATAL: password "***" is wrong; retrying with ***'


def test_scrub_also_redacts_urls_in_the_text() -> None:
    message = "could not connect to postgresql+psycopg://tuner:hunter2-xyz@db-host/tuner: timeout"
    assert scrub(message, URL) == "could not connect to postgresql+psycopg://tuner:***@db-host/tuner: timeout"
    # a URL of another storage in the same text loses its password too
    other = "fell back from mysql://root:other-pw@h/x"
    assert scrub(other, URL) == "fell back from mysql://root:***@h/x"


def test_scrub_removes_both_spellings_of_a_percent_encoded_password() -> None:
    url = "postgresql://tuner:p%40ss%3Aw0rd@db/tuner"  # the password is p@ss:w0rd
    assert scrub("auth failed for p@ss:w0rd", url) == "auth failed for ***"
    assert scrub("dsn password=p%40ss%3Aw0rd", url) == "dsn password=***"


def test_scrub_without_a_password_only_redacts() -> None:
    text = "server at db-host said no (tuner)"
    assert scrub(text, "postgresql://tuner@db-host/tuner") == text
    assert scrub(text, "sqlite:////tmp/a.db") == text


def test_scrub_keeps_short_passwords_in_free_text_but_not_in_urls() -> None:
    # a 2-character password would blank every matching pair of letters; URLs still lose it
    url = "postgresql://u:ab@h/db"
    assert scrub("table ab missing at postgresql://u:ab@h/db", url) == "table ab missing at postgresql://u:***@h/db"


# ---------------------------------------------------------------------------- every CLI path, real

#: the wrong password, percent-encoded in the URL; decoded it reads wr@ng-pw:4711
WRONG = "wr%40ng-pw%3A4711"
WRONG_DECODED = "wr@ng-pw:4711"


def _secrets_absent(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text, f"{secret!r} leaked into: {text[:2000]}"


@pytest.fixture(scope="module")
def wrong_url(postgres_server: str) -> str:
    """The test server with a wrong (percent-encoded) password: connecting really fails."""
    right = password_of(postgres_server)
    url = postgres_server.replace(f":{right}@", f":{WRONG}@", 1)
    assert WRONG in url and right not in url
    return url


def _workload(tmp_path: Path, storage: str | None = None) -> Path:
    study: dict[str, object] = {"trials": 2, "sampler": "grid"}
    if storage:
        study["storage"] = storage
    return sim_workload(tmp_path, "red", search={"pool_size": [1, 2]}, study=study)


@pytest.mark.parametrize(
    "command",
    [
        "optimize --storage URL",
        "optimize (study.storage)",
        "studies",
        "studies --json",
        "report",
        "report --json",
        "compare",
        "export",
        "dashboard",
    ],
)
def test_a_refused_password_is_one_redacted_line(command: str, wrong_url: str, tmp_path: Path) -> None:
    if command == "optimize --storage URL":
        args: list[str | Path] = ["optimize", _workload(tmp_path), "--storage", wrong_url]
    elif command == "optimize (study.storage)":
        args = ["optimize", _workload(tmp_path, wrong_url)]
    elif command == "compare":
        args = ["compare", wrong_url, wrong_url]
    elif command == "export":
        args = ["export", wrong_url, "--pick", "best", "--format", "json"]
    elif command == "dashboard":
        args = ["dashboard", wrong_url, "--port", str(_free_port())]
    else:
        args = command.split() + [wrong_url]
        args.insert(1, args.pop())  # STORAGE right after the command name
    result = run(*args, cwd=tmp_path, timeout=90)
    assert result.returncode == 2, (result.stdout, result.stderr)
    line = one_line_error(result.stderr)
    assert "password authentication failed" in line
    assert "tuner:***@127.0.0.1" in line or "tuner:***@localhost" in line
    _secrets_absent(result.stdout + result.stderr, WRONG, WRONG_DECODED, "wr%40ng", "wr@ng", "pw:4711", "pw%3A4711")
    assert not (tmp_path / "studies").exists()  # nothing fell back to a local file


# ------------------------------------------------------------- a study whose file holds the password


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def pg_study(postgres_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """A 2-trial study made by ``tuner optimize`` whose storage (with its password) is in the workload file."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_plain(postgres_server), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = with_database(postgres_server, name)
    folder = tmp_path_factory.mktemp("redaction")
    workload = _workload(folder, url)
    assert password_of(url) in workload.read_text()
    result = run("optimize", workload, cwd=folder, timeout=120)
    assert result.returncode == 0, result.stderr
    yield {"url": url, "folder": folder, "secret": password_of(url), "optimize": result}
    with psycopg.connect(_plain(postgres_server), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_optimize_prints_the_storage_redacted(pg_study: dict[str, object]) -> None:
    result = pg_study["optimize"]
    assert isinstance(result, subprocess.CompletedProcess)
    secret = str(pg_study["secret"])
    _secrets_absent(result.stdout + result.stderr, secret)
    assert re.search(r"study red@\S+ in postgresql\+psycopg://tuner:\*\*\*@", result.stderr), result.stderr


def test_the_stored_study_holds_no_password(pg_study: dict[str, object]) -> None:
    url, secret = str(pg_study["url"]), str(pg_study["secret"])
    study = load_study(url, "red")
    text = study.user_attrs["workload_text"]
    assert "storage: postgresql+psycopg://tuner:***@" in text
    assert secret not in text
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 2
    stored = json.dumps(
        [study.user_attrs, study._storage.get_study_system_attrs(study._study_id)]
        + [[t.params, t.user_attrs, t.system_attrs] for t in trials],
        default=str,
    )
    assert secret not in stored
    # and neither did any other table of the database (Optuna keeps attributes as JSON text)
    import psycopg

    with psycopg.connect(_plain(url)) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        assert "study_user_attributes" in tables
        for table in tables:
            rows = conn.execute(f'SELECT * FROM "{table}"').fetchall()
            assert secret not in json.dumps(rows, default=str), table


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["studies"], "studies in postgresql+psycopg://tuner:***@"),
        (["studies", "--json"], None),
        (["report"], None),
        (["report", "--json"], None),
        (["export", "--pick", "best", "--format", "json"], '"storage": "postgresql+psycopg://tuner:***@'),
    ],
)
def test_read_commands_show_the_storage_redacted(
    args: list[str], shown: str | None, pg_study: dict[str, object]
) -> None:
    url, secret = str(pg_study["url"]), str(pg_study["secret"])
    result = run(args[0], url, *args[1:], cwd=Path(str(pg_study["folder"])))
    assert result.returncode == 0, result.stderr
    _secrets_absent(result.stdout + result.stderr, secret)
    if shown:
        assert shown in result.stdout, result.stdout
    else:  # these do not print the storage; the study itself is there
        assert "red@" in result.stdout


def test_compare_json_names_both_storages_redacted(pg_study: dict[str, object], tmp_path: Path) -> None:
    url, secret = str(pg_study["url"]), str(pg_study["secret"])
    name = load_study(url, "red").study_name
    copy = tmp_path / "copy.db"
    optuna.copy_study(from_study_name=name, from_storage=url, to_storage=f"sqlite:///{copy}")
    result = run("compare", url, copy, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    _secrets_absent(result.stdout + result.stderr, secret)
    document = json.loads(result.stdout)
    storages = re.findall(r'"storage": "([^"]*)"', json.dumps(document))
    assert any(s.startswith("postgresql+psycopg://tuner:***@") for s in storages), storages
    assert f"sqlite:///{copy}" in storages


def test_dashboard_announces_the_storage_redacted(pg_study: dict[str, object], tmp_path: Path) -> None:
    url, secret = str(pg_study["url"]), str(pg_study["secret"])
    port = _free_port()
    proc = start("dashboard", url, "--port", str(port), cwd=tmp_path)
    try:
        answered = False
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as response:
                    studies = json.load(response)["study_summaries"]
                answered = True
                break
            except OSError:
                time.sleep(0.2)
        assert answered, f"the dashboard never answered (exit {proc.poll()})"
        assert [s["study_name"] for s in studies] == [load_study(url, "red").study_name]
    finally:
        proc.terminate()
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    _secrets_absent(out + err, secret)
    assert "optuna-dashboard for postgresql+psycopg://tuner:***@" in err, err
