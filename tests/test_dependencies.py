"""Every package pinned in requirements.txt earns its place: something in the project imports it
(or, for the two that nothing of ours imports, what needs it is checked)."""
import ast
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMPORT_NAME = {"scikit-learn": "sklearn", "opencv-python-headless": "cv2", "pillow": "PIL"}
# Used by the tests only (the toolkit itself needs none of them). pytest-xdist is a pytest plugin that
# nothing imports: the last test checks `make test` uses it.
TEST_ONLY = {"pytest", "hypothesis", "nbclient", "nbformat", "pytest-xdist"}


def pinned() -> dict[str, str]:
    """name -> version of every requirement line; each must be pinned with ==."""
    out = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            m = re.fullmatch(r"([A-Za-z0-9_.-]+)==([0-9][A-Za-z0-9.]*)", line)
            assert m, f"requirements.txt: {line!r} is not pinned as name==version"
            out[m.group(1).lower()] = m.group(2)
    return out


def _sources(path: Path) -> list[str]:
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text())["cells"]
        return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    return [path.read_text()]


def top_level_imports(*folders: str) -> set[str]:
    """The top-level names of every absolute import in the .py files and notebooks under `folders`."""
    names = set()
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix not in (".py", ".ipynb") or "build" in path.relative_to(ROOT).parts:
                continue
            for source in _sources(path):
                for node in ast.walk(ast.parse(source)):
                    if isinstance(node, ast.Import):
                        names.update(a.name.split(".")[0] for a in node.names)
                    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                        names.add(node.module.split(".")[0])
    return names


def _import_name(package: str) -> str:
    return IMPORT_NAME.get(package, package.replace("-", "_"))


def test_every_runtime_package_is_imported_by_the_toolkit():
    toolkit = top_level_imports("competition", "kernels")
    unused = [p for p in pinned() if p not in TEST_ONLY | {"six", "ipykernel"} and _import_name(p) not in toolkit]
    assert not unused, f"pinned in requirements.txt but imported nowhere in competition/ or kernels/: {unused}"


def test_every_test_package_is_imported_by_the_tests():
    tests = top_level_imports("tests")
    assert not [p for p in TEST_ONLY - {"pytest-xdist"} if p in pinned() and _import_name(p) not in tests]
    assert TEST_ONLY <= set(pinned())


def test_the_two_packages_nothing_of_ours_imports_are_still_needed():
    import importlib.util

    # six: kaggle's own code imports it, but its wheel does not declare it
    kaggle_dir = Path(importlib.util.find_spec("kaggle").origin).parent
    assert any(re.search(r"^\s*(import six|from six)", p.read_text(errors="replace"), re.MULTILINE)
               for p in kaggle_dir.rglob("*.py"))
    # ipykernel: the Jupyter kernel (python3) that nbclient starts to execute the notebook in the tests
    from jupyter_client.kernelspec import get_kernel_spec
    assert "ipykernel" in " ".join(get_kernel_spec("python3").argv)
    assert 'kernel_name="python3"' in (ROOT / "tests" / "test_notebook.py").read_text()
    # pytest-xdist: the suite's processes, `-n` in the Makefile's test target (what .ci/run runs)
    test_target = re.search(r"^test:.*\n\t(.*)$", (ROOT / "Makefile").read_text(), re.MULTILINE).group(1)
    assert "-m pytest" in test_target and "-n $(TEST_JOBS)" in test_target
    assert importlib.util.find_spec("xdist") is not None
