"""``run_code``: a notebook's code in this process, for machines without Jupyter (the GPU check uses it)."""
import json

import pytest

from lopt_core.lab.notebooks import list_notebooks, run_code


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
