"""Provenance: the commit recorded with every result, and when it is marked dirty."""
import subprocess

from utils import common


def test_git_commit_is_dirty_only_when_code_changes(tmp_path, monkeypatch):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    for name in ("code.py", "README.md", "results/table.csv", "bench/results/speed.csv"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("first\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.setattr(common, "REPO_ROOT", tmp_path)
    head = common.git_commit()
    assert len(head) == 40
    for name in ("README.md", "results/table.csv", "bench/results/speed.csv"):
        (tmp_path / name).write_text("changed\n")
        assert common.git_commit() == head, name
    (tmp_path / "code.py").write_text("changed\n")
    assert common.git_commit() == head + "+dirty"
