"""Every figure a user reads about a preset comes from competition/config/figures.py: the README's table and
docs/guide.md's are it, `train --help` says it, the README's first lines agree with it, and the GPU estimates are
what `plan` computes today. A figure changed in one place and not the others fails here."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from competition.config import OFFERED, preset
from competition.config.figures import FIGURES, offered_line, readme_table

ROOT = Path(__file__).resolve().parents[1]


def _section(path: Path) -> str:
    text = path.read_text()
    start = text.index("<!-- presets: made from competition/config/figures.py -->\n")
    return text[start:text.index("<!-- presets end -->", start)].split("\n", 1)[1].strip()


@pytest.mark.parametrize("page", ["README.md", "docs/guide.md"])
def test_the_preset_tables_are_the_figures(page):
    assert _section(ROOT / page) == readme_table(), f"{page}: paste competition.config.figures.readme_table()"


def test_help_offers_the_presets_with_their_figures():
    assert list(OFFERED) == list(FIGURES) and all(OFFERED[n] == offered_line(n) for n in FIGURES)
    from competition.cli import build_parser
    sub = build_parser()._subparsers._group_actions[0].choices["train"]
    text = " ".join(sub.format_help().split())
    for name in FIGURES:
        assert " ".join(f"{name:<5} {offered_line(name)}".split()) in text


def test_the_readmes_first_lines_say_the_demos_figure():
    minutes = re.search(r"in (\S+ min)", FIGURES["demo"].fold.value).group(1)
    first = ROOT.joinpath("README.md").read_text().split("```bash\n", 1)[1].split("```", 1)[0]
    [line] = [x for x in first.splitlines() if x.startswith("make demo")]
    assert f"{minutes} on 2 CPU cores" in line


def test_every_figure_is_marked_and_says_where_it_is_from():
    for name, f in FIGURES.items():
        for figure in (f.fold, f.test_pass, f.score):
            assert figure.on and str(figure).count("(") >= 1
            assert ("measured" if figure.measured else "estimate") in str(figure)
        page, _, anchor = f.section.partition("#")
        text = (ROOT / "docs" / page).read_text()
        assert not anchor or f"{anchor}" in {_slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}, (name, anchor)


def _slug(heading: str) -> str:
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@pytest.mark.parametrize("name", ["unet", "full"])
def test_the_gpu_estimates_are_what_plan_computes(name, capsys):
    """A fold (its training, out-of-fold pass and scoring) and the 5 folds' test pass, as `plan` computes them
    with its default rates today."""
    from competition.costs.plan import plan
    c = plan(preset(name), None, "hflip", "t4x2", allow_split=True)["cost"]
    assert FIGURES[name].fold.value == f"{c['fold_h']:.1f} h"
    assert FIGURES[name].test_pass.value == f"{c['predict_h']:.1f} h"


def test_the_cpu_costs_of_the_full_data_are_what_plan_here_computes(capsys, monkeypatch):
    """`cpu`'s fold of the 5,088 photos and its test pass, as `plan --accelerator here` computes them from the step
    times recorded on this project's EPYC (here_cost is checked by hand in tests/test_plan_here.py)."""
    import competition.training.train as train
    from competition.cli import main
    from competition.costs.here import MEASURED_EPYC, here_cost
    c = here_cost(preset("cpu"), MEASURED_EPYC, 5, "hflip")  # the test pass of the 5 folds `train-all` trains
    assert FIGURES["cpu"].fold.value == f"{c.fold_h:.1f} h" and FIGURES["cpu"].test_pass.value == f"{c.test_h:.1f} h"
    monkeypatch.setattr(train, "measured_rates", lambda cfg, refiner, prepare: MEASURED_EPYC)
    assert main(["plan", "--preset", "cpu", "--accelerator", "here"]) == 0
    out = capsys.readouterr().out
    assert f"| one fold | {c.fold_h:.1f} h |" in out and f"| test pass, 5 fold(s) | {c.test_h:.1f} h |" in out


def test_the_migration_table_in_the_guide_is_the_codes():
    from competition.cli.table import MIGRATION_END, MIGRATION_START, current_section, migration_table
    text = (ROOT / "docs" / "guide.md").read_text()
    assert current_section(text, MIGRATION_START, MIGRATION_END) == migration_table(), \
        "rewrite it: python -m competition.cli.table docs/guide.md"


def test_every_make_alias_is_read_by_the_makefile():
    from competition.cli.table import MAKE_ALIASES
    make = (ROOT / "Makefile").read_text()
    for old, new in MAKE_ALIASES.items():
        assert re.search(rf"^{new}\s*\?=.*\$\({old}\)", make, re.M), f"{new} does not fall back on {old}"


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _outside_migration(path: Path) -> str:
    from competition.cli.table import MIGRATION_END, MIGRATION_START, current_section
    text = path.read_text()
    section = current_section(text, MIGRATION_START, MIGRATION_END)
    return text.replace(section, "") if section else text


def test_old_names_and_spellings_appear_only_in_the_migration_table():
    """Retired preset names, old option spellings (in their subcommand's line) and old Make variables: a page
    that still uses one teaches it."""
    from competition.cli.parser import OLD_SPELLINGS
    from competition.cli.table import MAKE_ALIASES
    from competition.config import RETIRED
    found = []
    for page in _pages():
        text = _outside_migration(page)
        for name in RETIRED:
            found += [f"{page.name}: preset {name}" for _ in re.finditer(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text)]
        for (cmd, old), new in OLD_SPELLINGS.items():
            pattern = rf"competition {cmd}\b[^\n`]*?(?<![\w-]){re.escape(old)}(?![\w-])"
            found += [f"{page.name}: {cmd} {old}" for _ in re.finditer(pattern, text)]
        for old in MAKE_ALIASES:
            found += [f"{page.name}: {old}=" for _ in re.finditer(rf"(?<![\w-]){old}=", text)]
    assert not found, found
