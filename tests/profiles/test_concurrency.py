"""Two processes writing to one SQLite file at once (the API and a local worker do this)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from sqlmodel import Session, func, select

from profiles.db import make_engine
from profiles.migrate import upgrade
from profiles.models import Job

WRITER = textwrap.dedent("""
    import sys
    from sqlmodel import Session
    from profiles.db import make_engine
    from profiles.models import Job
    url, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    engine = make_engine(url)
    for i in range(n):
        with Session(engine) as session:
            job = Job(id=f"{prefix}-{i}", kind="run")
            session.add(job)
            session.flush()
            job.done = 1  # read-modify-write inside one transaction
            session.commit()
""")


def test_two_processes_write_one_sqlite_file_without_errors(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    engine = make_engine(url)
    upgrade(engine)
    n = 150
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, url, prefix, str(n)], stderr=subprocess.PIPE, text=True)
        for prefix in ("a", "b")
    ]
    errors = [w.communicate(timeout=120)[1] for w in writers]
    assert [w.returncode for w in writers] == [0, 0], errors
    with Session(engine) as session:
        assert session.exec(select(func.count()).select_from(Job)).one() == 2 * n
        assert session.exec(select(func.count()).select_from(Job).where(Job.done == 1)).one() == 2 * n
