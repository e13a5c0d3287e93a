"""The README and docs/*.md name only things that exist: every `make` target (parsed from the
Makefile), every module (`fgvc...` dotted names and `python -m X`, found by
importlib.util.find_spec; a name past the module must be defined in its source), every
repository path (relative to the repository root; globs, `{a,b}` and `<placeholder>` allowed)
and every relative markdown link (file and `#anchor`). The method docstrings' pointers into
docs/ are checked the same way. A renamed module or moved file then fails here, not in a
reader's shell."""
from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Paths the pages may name although a fresh clone does not have them, each made by a command
# the pages describe. Every entry must still be named by some page (test below).
CREATED_BY_RUNS = {
    "reproduction": "`make study` writes the reruns, tables and report there (git-ignored)",
    ".venv": "`make setup` (run by every target) creates the virtual environment",
    ".checkpoints": "every run writes its best.pt / last.pt there (git-ignored)",
    "results/.locks": "a grid holds one lock per run there while it runs",
    "results/bench_gpu.md": "`make gpu-check` writes it on a GPU machine; it has not run on one yet",
    "runs/.replaced": "--replace archives a replaced run's record there, under any results root (git-ignored)",
    "scratch/results": "every command and notebook run with its defaults writes there (git-ignored)",
}
ROOT_FILES = {"README.md", "Makefile", "pyproject.toml", "requirements.txt", "environment.yml",
              "conftest.py"}

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
SPAN = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
MAKE = re.compile(r"(?<![\w$-])make ([a-z][a-z0-9-]*)")
MODULE = re.compile(r"(?<![\w/.-])fgvc(?:\.[A-Za-z_]\w*)+")
DASH_M = re.compile(r"(?<!\S)-m ([A-Za-z_][\w.]*)")
PATHLIKE = re.compile(r"^\.?[A-Za-z_][\w.*{},<>-]*(?:/[\w.*{},<>-]*)+$")


def make_targets(makefile: Path = ROOT / "Makefile") -> set[str]:
    """The targets of the Makefile: `name:` at the start of a line (not `name :=`)."""
    return set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", makefile.read_text(), re.M))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a markdown page (a repeated heading gets -1, -2, ...)."""
    text = FENCE.sub("", page.read_text())
    seen: dict[str, int] = {}
    out = set()
    for h in re.findall(r"^#{1,6} (.+)$", text, re.M):
        s = slug(h)
        out.add(f"{s}-{seen[s]}" if s in seen else s)
        seen[s] = seen.get(s, 0) + 1
    return out


def defined_names(source: str) -> set[str]:
    """Names a module defines anywhere (functions, classes, assignments, imports)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def module_problem(name: str) -> str | None:
    """None if `name` is a module, or a module followed by names its source defines."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        mod = ".".join(parts[:i])
        try:
            spec = importlib.util.find_spec(mod)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            continue
        rest = parts[i:]
        if not rest:
            return None
        if spec.origin and spec.origin.endswith(".py"):
            missing = set(rest) - defined_names(Path(spec.origin).read_text())
            if not missing:
                return None
            if spec.submodule_search_locations is not None and rest[0] in missing:
                break  # a package: what follows it would be a module, and there is none
            return f"module {name}: {mod} defines no {', '.join(sorted(missing))}"
        return f"module {name}: {mod} has no source to check {'.'.join(rest)} in"
    return f"module {name} does not exist"


def expand(path: str) -> list[str]:
    """`a.{md,csv}` -> [a.md, a.csv]; `<run_id>` -> `*`."""
    path = re.sub(r"<[^>]*>", "*", path)
    m = re.search(r"\{([^}]*)\}", path)
    if not m:
        return [path]
    return [q for alt in m.group(1).split(",")
            for q in expand(path[:m.start()] + alt + path[m.end():])]


def path_problem(token: str, root: Path = ROOT) -> str | None:
    """None if repository path `token` exists (a glob matches), or a run creates it."""
    token = token.rstrip("/")
    if any(token == p or token.startswith(p + "/") for p in CREATED_BY_RUNS):
        return None
    for p in expand(token):
        if "*" in p:
            if not any(root.glob(p)):
                return f"path {token}: nothing matches {p}"
        elif not (root / p).exists():
            return f"path {token} does not exist"
    return None


def code_of(text: str) -> tuple[list[str], list[str]]:
    """(inline code spans and shell blocks: where paths are named; all code: where commands
    and modules are). A fenced block without a language (a drawing, such as the layout) names
    no paths."""
    shell, drawings = [], []
    for lang, body in FENCE.findall(text):
        (shell if lang else drawings).append(body)
    spans = SPAN.findall(FENCE.sub("", text))
    return spans + shell, spans + shell + drawings


def path_tokens(code: list[str]) -> set[str]:
    out = set()
    for chunk in code:
        for tok in chunk.split():
            tok = tok.strip(",;:()'\"")
            if tok in ROOT_FILES or (PATHLIKE.match(tok) and "://" not in tok
                                     and not tok.startswith(("-", "/"))):
                out.add(tok)
    return out


def link_problem(target: str, page: Path) -> str | None:
    """None if a relative link of `page` resolves: the file exists and so does its #anchor."""
    if re.match(r"^[a-z]+:", target):
        return None  # http:, https:, mailto: are not checked here
    file, _, anchor = target.partition("#")
    dest = (page.parent / file).resolve() if file else page
    if not dest.exists():
        return f"link {target}: {file} does not exist"
    if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
        return f"link {target}: no heading #{anchor} in {dest.name}"
    return None


def problems(text: str, page: Path, root: Path = ROOT, targets: set[str] | None = None) -> list[str]:
    """Everything `text` (the content of `page`) names that does not exist."""
    targets = make_targets() if targets is None else targets
    paths_code, all_code = code_of(text)
    code = "\n".join(all_code)
    found = [f"make target {t} is not in the Makefile"
             for t in sorted(set(MAKE.findall(code))) if t not in targets]
    modules = set(MODULE.findall(text)) | set(DASH_M.findall(code))
    found += [p for m in sorted(modules) if (p := module_problem(m))]
    found += [p for t in sorted(path_tokens(paths_code)) if (p := path_problem(t, root))]
    found += [p for t in sorted(set(LINK.findall(FENCE.sub("", text))))
              if (p := link_problem(t, page))]
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_names_only_what_exists(page):
    assert problems(page.read_text(), page) == []


def test_the_readme_links_every_docs_page():
    links = set(LINK.findall(PAGES[0].read_text()))
    for page in PAGES[1:]:
        assert f"docs/{page.name}" in links, page.name


def test_method_docstrings_point_into_docs_that_exist():
    """Measured numbers live in docs/; a method's docstring points there (file#anchor)."""
    pointers = []
    for src in sorted((ROOT / "lib" / "fgvc" / "methods").glob("*.py")):
        for ref in re.findall(r"docs/[\w.-]+\.md(?:#[\w-]+)?", src.read_text()):
            pointers.append(ref)
            assert link_problem(ref, ROOT / "README.md") is None, f"{src.name}: {ref}"
    assert pointers  # the methods do point into docs/


def test_every_path_allowed_to_be_missing_is_still_named():
    """The list of paths made by runs stays short: an entry no page names any more goes."""
    text = "\n".join(p.read_text() for p in PAGES)
    for path in CREATED_BY_RUNS:
        assert path in text, path


def test_the_checker_catches_made_up_names(tmp_path):
    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "page.md"
    (tmp_path / "docs" / "other.md").write_text("# Other\n\n## A real heading\n")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "accuracy.md").write_text("")
    text = ("# Page\n\nRun `make study` and `make frobnicate`, then `python -m fgvc.study.grid`,"
            " `python -m fgvc.study.nosuch` and `fgvc.study.grid.no_such_function`. Read"
            " `results/accuracy.md`, `results/{accuracy,nothere}.md` and `configs/made_up.yaml`;"
            " see [other](other.md#a-real-heading), [gone](other.md#no-heading),"
            " [missing](missing.md) and [here](#page).\n\n"
            "```bash\n.venv/bin/python -m fgvc.study.fake\n```\n")
    page.write_text(text)
    found = problems(text, page, root=tmp_path, targets={"study", "test"})
    assert found == [
        "make target frobnicate is not in the Makefile",
        "module fgvc.study.fake does not exist",
        "module fgvc.study.grid.no_such_function: fgvc.study.grid defines no no_such_function",
        "module fgvc.study.nosuch does not exist",
        "path configs/made_up.yaml does not exist",
        "path results/{accuracy,nothere}.md does not exist",
        "link missing.md: missing.md does not exist",
        "link other.md#no-heading: no heading #no-heading in other.md",
    ]
    # and the same names, all real, pass
    ok = ("# Page\n\n`make study`, `python -m fgvc.study.grid`, `fgvc.study.grid.main`, "
          "`results/accuracy.md`, `results/*.md`, `results/<table>.md`, "
          "[other](other.md#a-real-heading), [here](#page)\n")
    page.write_text(ok)
    assert problems(ok, page, root=tmp_path, targets={"study"}) == []


def test_slug_follows_githubs_rule():
    assert slug("The transfer profile's calibration") == "the-transfer-profiles-calibration"
    assert slug("Regenerating everything in `results/`") == "regenerating-everything-in-results"
    assert slug("focus on photo-like images: the failure and the fix") == \
        "focus-on-photo-like-images-the-failure-and-the-fix"
