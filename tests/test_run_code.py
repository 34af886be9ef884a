"""``run_code``: a notebook's code in this process, for machines without Jupyter (the GPU check uses it)."""
import json
import os

import pytest

from lopt_core.lab.notebooks import list_notebooks, out_dir_parameter, run_code


def test_a_notebook_runs_in_process_with_its_parameters(tmp_path):
    (path,) = list_notebooks(["00"])
    info = run_code(path, tmp_path, profile="ci", parameters={"backbone_spec": "tiny-llama", "test_limit": 8})
    metrics = json.loads((tmp_path / path.stem / "metrics.json").read_text())
    assert info["out_dir"] == str(tmp_path / path.stem)
    assert metrics["backbone"] == "tiny-llama" and metrics["zero_shot"]["n"] == 8  # the values given won


def test_a_failing_cell_names_the_notebook_and_cell(tmp_path):
    (path,) = list_notebooks(["00"])
    with pytest.raises(Exception) as err:
        run_code(path, tmp_path, parameters={"backbone_spec": "no/such/model-folder"})
    assert any("00_tour_of_the_backbone.ipynb[code cell" in str(entry.path) for entry in err.traceback)


def test_a_notebook_reads_its_out_dir_relative_inside_the_repository_and_absolute_outside(tmp_path):
    """An executed copy (and the book made from it) shows ../outputs/…, not a path of the machine that ran it."""
    (path,) = list_notebooks(["00"])
    path = path.resolve()
    inside = path.parent.parent / "outputs" / path.stem
    assert out_dir_parameter(inside, path) == os.path.join("..", "outputs", path.stem)
    assert (path.parent / out_dir_parameter(inside, path)).resolve() == inside  # the same folder, from the notebook's
    assert out_dir_parameter(tmp_path / "run", path) == str(tmp_path / "run")
