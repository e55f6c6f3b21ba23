"""The project's documentation stands alone and stays true: the command reference is what
the commands say now, every relative link and anchor resolves inside the repository, nothing
points outside it, the defaults and exit codes the documents quote are the code's, and no
package is larger, nor the kernel more tangled, than the architecture promises."""

import ast
import difflib
import re
from dataclasses import fields
from pathlib import Path

import pytest

from cpms_admin.privacy.dossier_pdf import LABELS
from cpms_admin.settings import Settings, env_name
from cpms_admin.vocabulary import AuditAction
from scripts.command_reference import OUT, REGENERATE, render
from tests.audit_helpers import documented_actions

ROOT = Path(__file__).parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)


def test_the_command_reference_is_what_the_commands_say_now() -> None:
    committed = OUT.read_text(encoding="utf-8") if OUT.exists() else ""
    now = render()
    if committed != now:
        diff = "".join(
            list(
                difflib.unified_diff(
                    committed.splitlines(keepends=True),
                    now.splitlines(keepends=True),
                    "docs/commands.md (committed)",
                    "docs/commands.md (from the commands now)",
                )
            )[:60]
        )
        pytest.fail(
            "docs/commands.md differs from the commands' help: regenerate it with "
            f"`make docs` (or `{REGENERATE}`) and commit it.\n{diff}"
        )


def repository_text_files() -> list[Path]:
    found = [ROOT / "README.md", ROOT / "Makefile", ROOT / "pyproject.toml"]
    for folder in ("docs", "cpms_admin", "scripts", "templates", "tests", "bench"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and path.suffix in {".md", ".py", ".html", ".css", ".txt", ".sh"}:
                found.append(path)
    return found


def test_nothing_points_at_documents_outside_the_repository() -> None:
    """A clone has no ../shared: the rules and the contract live in docs/."""
    outside = re.compile(r"\.\./shared\b|(?<![\w/.-])(?:DESIGN|CLI|STYLE)\.md\b")
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in repository_text_files()
        if path != Path(__file__)
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if outside.search(line)
    ]
    assert found == [], "point at docs/rules.md or docs/scripting.md instead:\n" + "\n".join(found)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: the text of its links and code, lower case,
    punctuation dropped except hyphens, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", text, re.MULTILINE):
        anchor = github_anchor(heading)
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        found.add(anchor if count == 0 else f"{anchor}-{count}")
    found.update(re.findall(r"<a\s+(?:name|id)=\"([^\"]+)\"", text))
    return found


def links(path: Path) -> list[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    text = re.sub(r"`(?:[^`\n]|\n(?!\n))+`", "", text)  # code spans (may wrap) are not links
    return LINK.findall(text) + REFERENCE_LINK.findall(text)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_resolves_to_a_file_and_anchor_of_the_repository(
    document: Path,
) -> None:
    broken = []
    for target in links(document):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:...
            continue
        name, _, anchor = target.partition("#")
        destination = (document.parent / name).resolve() if name else document
        if not destination.exists() or not destination.is_relative_to(ROOT):
            broken.append(f"{target}: no such file in the repository")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading #{anchor} in {destination.relative_to(ROOT)}")
    assert broken == []


def test_the_docs_link_to_each_other_and_the_readme_to_them() -> None:
    readme = set(links(ROOT / "README.md"))
    for name in ("docs/rules.md", "docs/commands.md", "docs/scripting.md"):
        assert name in readme


QUOTED_DEFAULTS = (
    re.compile(r"`(CPMS_[A-Z0-9_]+)`\)?\s+\((\d[\d,]*)"),  # `CPMS_CODE_MAX_TRIES` (5)
    re.compile(r"(\d[\d,]*)(?:\s+[a-z-]+){0,2}\s+\(`(CPMS_[A-Z0-9_]+)`"),  # 5 tries (`CPMS_X`
    re.compile(r"^\| `(CPMS_[A-Z0-9_]+)`[^|]*\| (\d[\d,]*) \|", re.MULTILINE),  # a table row
)


def test_the_defaults_the_documents_quote_are_the_settings_defaults() -> None:
    defaults = {env_name(spec.name): spec.default for spec in fields(Settings)}
    quoted = []
    for path in DOCUMENTS:
        text = path.read_text(encoding="utf-8")
        for pattern in QUOTED_DEFAULTS:
            for first, second in pattern.findall(text):
                name, value = (first, second) if first.startswith("CPMS_") else (second, first)
                quoted.append((path.name, name, int(value.replace(",", ""))))
    assert len({name for _, name, _ in quoted}) >= 10
    assert [(doc, name, value) for doc, name, value in quoted if defaults.get(name) != value] == []


def exit_codes(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    section = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| \d \|.*$", section, re.MULTILINE)


def test_the_readme_and_the_scripting_guide_give_the_same_exit_codes() -> None:
    table = exit_codes(ROOT / "docs" / "scripting.md")
    assert [row.split("|")[1].strip() for row in table] == ["0", "1", "2", "3", "4", "5"]
    assert exit_codes(ROOT / "README.md") == table


def test_every_audit_action_is_documented_and_those_on_a_member_read_in_french() -> None:
    """docs/audit.md lists every action an event can record, and says which name a member: a
    member reads those in their dossier, in French, never as `letter.void`. (Whether the
    table says right which name a member: test_audit_details.py.)"""
    documented = documented_actions()
    assert sorted(documented) == sorted(AuditAction)
    on_a_member = {action for action, member in documented.items() if member != "no"}
    assert on_a_member == set(LABELS["action"])


def test_no_package_holds_more_than_the_architecture_allows() -> None:
    """docs/architecture.md promises a newcomer packages of at most 15 modules."""
    promise = "No package holds more than 15 modules."
    assert promise in (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    package = ROOT / "cpms_admin"
    sizes = {
        str(folder.relative_to(ROOT)): len(list(folder.glob("*.py")))
        for folder in [package, *package.rglob("*")]
        if (folder / "__init__.py").is_file()
    }
    assert {name: size for name, size in sizes.items() if size > 15} == {}


def test_the_kernel_imports_no_capability_package() -> None:
    """docs/architecture.md: the kernel is below every package, so a package can be read
    (and changed) without the kernel reaching back into it."""
    assert "the kernel imports no package but its own" in (
        ROOT / "docs" / "architecture.md"
    ).read_text(encoding="utf-8")
    package = ROOT / "cpms_admin"
    packages = {folder.name for folder in package.iterdir() if (folder / "__init__.py").is_file()}
    above = packages - {"audit_chain", "migrations"}  # the kernel's own packages
    kernel = [
        *(path for path in package.glob("*.py") if path.name != "__main__.py"),  # the entry point
        *(package / "audit_chain").glob("*.py"),
    ]
    reached = {
        f"{path.relative_to(package)} imports {name}"
        for path in kernel
        for name in _imported(path)
        if name.split(".")[1] in above  # every name starts with cpms_admin.
    }
    assert reached == set()


def test_no_test_module_imports_another() -> None:
    """What tests share lives in the helpers modules (tests/*_helpers.py, factories, harness):
    a test file can be read, moved or deleted without breaking another."""
    reaching = {
        f"{path.name} imports {name}"
        for path in (ROOT / "tests").glob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        for name in (
            [alias.name for alias in node.names] if isinstance(node, ast.Import)
            else [node.module or ""] if isinstance(node, ast.ImportFrom)
            else []
        )
        if name.startswith("tests.test_")
    }  # fmt: skip
    assert reaching == set()


def _imported(path: Path) -> list[str]:
    """The cpms_admin modules (or names in them) `path` imports, at any depth in its code."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return [name for name in names if name.startswith("cpms_admin.")]
