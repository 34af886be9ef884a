"""Papermill sweeps on a tiny notebook, one parameter set failing on purpose."""
import json

import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from lopt_core.cli import main
from lopt_core.lab.sweep import flatten, grid, parse_values, run_sweep

pytestmark = pytest.mark.notebook


@pytest.fixture()
def tiny_notebook(tmp_path):
    nb = new_notebook()
    params = new_code_cell('profile = "ci"\nout_dir = "."\nx = 1\nscale = 2\nseed = 0')
    params.metadata["tags"] = ["parameters"]
    body = new_code_cell(
        "import json, pathlib\n"
        "if x == 3:\n    raise ValueError('x = 3 is refused on purpose')\n"
        "pathlib.Path(out_dir, 'metrics.json').write_text(json.dumps("
        "{'y': x * scale, 'nested': {'accuracy': x / 10}, 'trainable_parameters': 10 * x, 'accuracy': x / 10}))")
    nb.cells = [params, body]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "tiny.ipynb"
    nbformat.write(nb, path)
    return path


def test_grid_and_helpers():
    assert grid({"a": [1, 2], "b": ["x"]}, seeds=[0, 1]) == [
        {"a": 1, "b": "x", "seed": 0}, {"a": 1, "b": "x", "seed": 1},
        {"a": 2, "b": "x", "seed": 0}, {"a": 2, "b": "x", "seed": 1}]
    assert grid([{"a": 1}, {"a": 2, "b": 3}], seeds=[7]) == [{"a": 1, "seed": 7}, {"a": 2, "b": 3, "seed": 7}]
    assert flatten({"a": 1, "b": {"c": 2, "d": [1]}}) == {"a": 1, "b.c": 2}
    assert parse_values(["2", "0.5", "lopt1", "True"]) == [2, 0.5, "lopt1", True]


def test_sweep_records_failures_goes_on_and_skips_finished_runs(tiny_notebook, tmp_path):
    out = tmp_path / "sweep"
    table = run_sweep(tiny_notebook, {"x": [1, 2, 3]}, out, fixed={"scale": 5}, progress=False)
    assert table["status"].tolist() == ["ok", "ok", "failed"]
    assert table["y"].tolist()[:2] == [5, 10] and table["nested.accuracy"].tolist()[:2] == [0.1, 0.2]
    assert "x = 3 is refused on purpose" in table["error"].iloc[2]
    assert (table["wall_seconds"] > 0).all()
    csv = pd.read_csv(out / "results.csv")
    assert len(csv) == 3 and (out / "x=1" / "tiny.ipynb").is_file()
    first = json.loads((out / "x=1" / "status.json").read_text())["wall_seconds"]
    again = run_sweep(tiny_notebook, {"x": [1, 2, 3]}, out, fixed={"scale": 5}, progress=False)
    assert json.loads((out / "x=1" / "status.json").read_text())["wall_seconds"] == first  # skipped
    assert again["status"].tolist() == ["ok", "ok", "failed"]  # the failed one was retried and failed again


def test_a_sweep_on_a_two_worker_dask_cluster_records_failures_and_skips_finished_runs(tiny_notebook, tmp_path):
    """Each run is a task on a LocalCluster of 2 processes; the tasks return their files and the client
    writes them (the workers never write into ``out``)."""
    pytest.importorskip("distributed")
    out = tmp_path / "dask"
    table = run_sweep(tiny_notebook, {"x": [1, 2, 3]}, out, fixed={"scale": 5}, scheduler="local", jobs=2,
                      progress=False)
    assert table["status"].tolist() == ["ok", "ok", "failed"]
    assert table["y"].tolist()[:2] == [5, 10] and "x = 3 is refused on purpose" in table["error"].iloc[2]
    assert (out / "x=1" / "tiny.ipynb").is_file() and (out / "x=2" / "metrics.json").is_file()
    status = json.loads((out / "x=1" / "status.json").read_text())
    assert status["host"] and status["wall_seconds"] > 0
    again = run_sweep(tiny_notebook, {"x": [1, 2, 3]}, out, fixed={"scale": 5}, scheduler="local", jobs=2,
                      progress=False)
    assert json.loads((out / "x=1" / "status.json").read_text()) == status  # skipped, not re-run
    assert again["status"].tolist() == ["ok", "ok", "failed"]


def test_sweep_with_seeds_and_two_jobs(tiny_notebook, tmp_path):
    table = run_sweep(tiny_notebook, {"x": [1, 2]}, tmp_path / "s", seeds=[0, 1], jobs=2, progress=False)
    assert len(table) == 4 and set(table["seed"]) == {0, 1} and (table["status"] == "ok").all()


def test_cli_sweep_writes_results_and_a_tradeoff_plot(tiny_notebook, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["sweep", str(tiny_notebook), "-p", "x", "1", "2", "-p", "scale", "3", "--out", str(out)])
    assert code == 0
    assert (out / "results.csv").is_file() and (out / "tradeoff.png").is_file()
    assert "x=1" in capsys.readouterr().out
    assert main(["sweep", str(tiny_notebook), "-p", "x", "3", "--out", str(tmp_path / "bad")]) == 1


def test_missing_notebook_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="notebook not found"):
        run_sweep(tmp_path / "nope.ipynb", {"x": [1]}, tmp_path)


def test_cell_timeout_is_30_min_under_ci_and_none_for_long_profiles(tmp_path):
    from lopt_core.lab.notebooks import cell_timeout, execute_notebook

    assert cell_timeout("ci") == 1800 and cell_timeout("cpu") is None and cell_timeout("gpu") is None
    assert cell_timeout("cpu", 5) == 5 and cell_timeout("ci", None) is None
    nb = new_notebook()
    params = new_code_cell('profile = "ci"\nout_dir = "."\nwait = 0.0')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, new_code_cell("import time\ntime.sleep(wait)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "sleepy.ipynb"
    nbformat.write(nb, path)
    assert execute_notebook(path, tmp_path / "out", "cpu", {"wait": 3.0})["seconds"] >= 3  # no limit
    with pytest.raises(Exception, match="(?i)timed out|timeout"):
        execute_notebook(path, tmp_path / "out", "cpu", {"wait": 30.0}, timeout=2)
