"""Provenance: the commit recorded with every result (the one its code was loaded from), and when it is marked dirty; CSV cells; the README's links."""
import csv
import re
import subprocess

from conftest import REPO
from utils import repro
from utils.files import write_csv


def test_git_commit_is_dirty_only_when_code_changes(tmp_path, monkeypatch):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    for name in ("code.py", "README.md", "results/table.csv", "bench/results/speed.csv"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("first\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.setattr(repro, "REPO_ROOT", tmp_path)
    head = repro.git_commit()
    assert len(head) == 40
    for name in ("README.md", "results/table.csv", "bench/results/speed.csv"):
        (tmp_path / name).write_text("changed\n")
        assert repro.git_commit() == head, name
    (tmp_path / "code.py").write_text("changed\n")
    assert repro.git_commit() == head + "+dirty"


def test_a_result_names_the_commit_its_code_was_loaded_from(tmp_path, monkeypatch):
    """A long run's checkout may move on before it writes its results: they name the code the process runs."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                    "--allow-empty", "-m", "later"], check=True)
    monkeypatch.setattr(repro, "REPO_ROOT", tmp_path)  # HEAD is now another commit
    assert repro.git_commit() != repro.COMMIT_AT_START
    assert repro.provenance()["commit"] == repro.COMMIT_AT_START
    assert repro.COMMIT_AT_START.split("+")[0] == subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


def test_csv_cells_are_quoted_as_the_csv_module_reads_them(tmp_path):
    rows = [['a"b', "c,d", 0.1234567891, 3, "line\nbreak"]]
    write_csv(tmp_path / "t.csv", ["x", "y", "z", "n", "w"], rows)
    with open(tmp_path / "t.csv", newline="") as f:
        back = list(csv.reader(f))
    assert back == [["x", "y", "z", "n", "w"], ['a"b', "c,d", "0.123457", "3", "line\nbreak"]]


def test_every_mutation_still_applies_to_the_code():
    """tests/mutations.py breaks each promise by changing one line; a line that moved would silently test nothing."""
    import mutations
    assert len({m.name for m in mutations.MUTATIONS}) == len(mutations.MUTATIONS)
    assert [m.name for m in mutations.MUTATIONS if mutations.stale(m)] == []
    for m in mutations.MUTATIONS:
        for guard in m.guards:
            assert (mutations.REPO / guard.split("::")[0]).is_file(), guard


def github_anchor(heading):
    """The fragment GitHub gives a markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


DOCUMENTS = ["README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")), "bench/RESULTS.md"]


def test_every_link_of_the_documents_reaches_a_file_and_heading():
    """README.md, docs/*.md and bench/RESULTS.md: every relative link reaches a file of the repository (relative to
    the document's folder) and, with a #fragment, a heading of that file; every document is linked from the README."""
    anchors = {}

    def anchors_of(path):
        if path not in anchors:
            anchors[path] = {github_anchor(h) for h in re.findall(r"^#+ (.+)$", path.read_text(), flags=re.M)}
        return anchors[path]
    checked = 0
    for name in DOCUMENTS:
        doc = REPO / name
        for link in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if re.match(r"[a-z]+://", link):
                continue
            path, _, fragment = link.partition("#")
            target = (doc.parent / path).resolve() if path else doc
            assert target.exists() and REPO in target.parents, f"{name} links to {path}, which is not in the repository"
            if fragment:
                assert target.suffix == ".md" and fragment in anchors_of(target), \
                    f"{name} links to {link}, which no heading of {target.relative_to(REPO)} makes"
            checked += 1
    assert checked > 60
    readme = (REPO / "README.md").read_text()
    assert all(f"]({name})" in readme for name in DOCUMENTS[1:]), "a document the README does not link"
    assert len(readme.encode()) < 15_000  # the front door: read in five minutes


def test_printed_numbers_are_compared_within_their_last_printed_digit():
    """A value on a rounding boundary: the exact number printed once and the same number recomputed from rounded
    files may round to neighbouring strings; both agree with it, a number two units off does not."""
    from conftest import printed_agrees, printed_numbers
    exact, recomputed = 0.4920500001, 0.4920499999
    assert f"{exact:.4f}" == "0.4921" and f"{recomputed:.4f}" == "0.4920"  # the boundary the substring test failed on
    assert printed_agrees(f"{exact:.4f}", recomputed) and printed_agrees(f"{recomputed:.4f}", exact)
    assert not printed_agrees("0.4923", exact) and not printed_agrees("0.4918", exact)
    assert printed_agrees("31.2%", 31.25) and not printed_agrees("31.4", 31.25)
    assert printed_agrees("33.3333", 100 / 3) and printed_agrees("1e-05", 1.4e-5) and not printed_agrees("1e-05", 2.1e-5)
    assert printed_agrees("0.4923", exact, slack=2e-4)  # the slack of the files a value was recomputed from
    assert printed_numbers("    5  0.1234  0.0123  0.4921  <- learngene") == ["5", "0.1234", "0.0123", "0.4921"]
    assert printed_numbers("accuracy: -1.5e-3 and +2") == ["-1.5e-3", "+2"]


ABSOLUTE = re.compile(r"(?<![\w.<>/-])/(?!path/to/|usr/|proc/|dev/|etc/)[A-Za-z0-9_.+-]+/[A-Za-z0-9_.+-]+")


def test_no_committed_document_or_result_holds_a_local_absolute_path():
    """What a reader gets names paths as they would type them (relative to the repository, <root>, ../shared/...,
    /path/to/... placeholders), never the folders of the machine that made a result."""
    kept = [f for f in sorted((REPO / "results" / "reference").rglob("*")) if f.suffix in (".md", ".csv", ".json",
                                                                                        ".jsonl", ".txt")]
    files = [REPO / name for name in DOCUMENTS] + kept + sorted((REPO / "bench" / "results").glob("*.csv"))
    found = {str(f.relative_to(REPO)): ABSOLUTE.findall(f.read_text()) for f in files}
    assert {f: paths for f, paths in found.items() if paths} == {}
    assert ABSOLUTE.findall("see /work/runs/cpu19/x and /tmp/a/b") == ["/work/runs", "/tmp/a"]
    assert ABSOLUTE.findall("<root>/data/x, ../shared/data/t, /path/to/CUB_200_2011, https://a.org/b/c") == []


# Figures drawn before the scripts wrote paths relative to the repository or <root>, whose runs went with the
# machine that made them: each leaves this list when the run that replaces it is committed (docs/results.md says
# which runs those are). The list may only shrink.
FIGURES_WITH_LOCAL_PATHS = {
    "tiny-imagenet-100-cpu-curves.png", "tiny-imagenet-100-cpu-heatmap.png", "tiny-imagenet-100-cpu-heldout.png",
    "tiny-imagenet-100-cpu-source-features.png",
    "tiny-imagenet-100-quick-budget.png", "tiny-imagenet-100-quick-curves.png", "tiny-imagenet-100-quick-heatmap.png",
    "tiny-imagenet-100-quick-heldout.png", "tiny-imagenet-100-quick-released-chain.png",
    "tiny-imagenet-100-quick-source-features.png",
    "tiny-imagenet-100-quick-source-forest.png", "tiny-imagenet-100-quick-tuned-forest.png"}


def test_no_committed_figure_names_a_local_absolute_path():
    """A figure's footer is its provenance text (the PNG's text chunks hold the same): it names paths as a reader
    would type them; the older figures listed above are the known exceptions, and each still holds one."""
    from PIL import Image
    local = {f.name for f in sorted((REPO / "results" / "reference").glob("*.png"))
             if ABSOLUTE.findall(" ".join(Image.open(f).text.values()))}
    assert local - FIGURES_WITH_LOCAL_PATHS == set()
    assert FIGURES_WITH_LOCAL_PATHS - local == set(), "redrawn without local paths: take them off the list"
