"""The repository's promises about itself: CI runs the README's test command, and the README
leads to every page of docs/."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    ci_lines = (ROOT / ".ci/run").read_text().splitlines()
    command = ci_lines[-1]
    assert "pytest" in command
    assert f"\n{command}\n" in (ROOT / "README.md").read_text()


def test_readme_shows_the_default_run_command():
    """The Quick start's first command block installs and runs the default config (a bare
    substring would also match the multi-process example's --workdir=/tmp/sharesnet_2p)."""
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    assert quick_start.strip().endswith(
        "python -m sharesnet_jax.main --config=configs/default.py --workdir=/tmp/sharesnet")


def test_readme_links_every_docs_page_and_each_link_resolves():
    """The long tables and detail pages moved to docs/: each must stay reachable from the
    README, and no link may point at a page that was renamed or removed."""
    linked = set(re.findall(r"\]\((docs/[^)#]+)\)", (ROOT / "README.md").read_text()))
    pages = {str(path.relative_to(ROOT)) for path in (ROOT / "docs").glob("*.md")}
    assert linked == pages, (sorted(linked - pages), sorted(pages - linked))
