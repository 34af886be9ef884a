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


def test_a_kernel_runs_over_local_sockets_without_the_tcp_warning(tmp_path, capfd):
    """A sweep starts one kernel per run: over TCP each logged "running over TCP without encryption" into the
    lesson's output (lesson 04 printed it 14 times)."""
    import nbformat

    from lopt_core.lab.notebooks import execute_notebook

    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                           "display_name": "Python 3"}})
    nb.cells = [nbformat.v4.new_code_cell('profile = "ci"\nout_dir = "."', metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("print(profile, 6 * 7)")]
    nbformat.write(nb, tmp_path / "tiny.ipynb")
    info = execute_notebook(tmp_path / "tiny.ipynb", tmp_path / "out", profile="demo")
    executed = nbformat.read(os.path.join(info["out_dir"], "tiny.ipynb"), as_version=4)
    assert executed.cells[-1].outputs[0]["text"] == "demo 42\n"
    captured = capfd.readouterr()
    assert "without encryption" not in captured.out + captured.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "tiny.ipynb"]  # no socket files beside it


@pytest.mark.skipif(os.name != "posix", reason="IPC sockets are POSIX only; elsewhere kernels use TCP")
def test_kernels_started_together_get_their_own_socket_folders():
    """Two kernels at once (a sweep with two jobs) under one socket name raced for the same files."""
    from lopt_core.lab.notebooks import kernel_config

    with kernel_config() as first, kernel_config() as second:
        prefixes = [config.KernelManager.ip for config in (first, second)]
        assert prefixes[0] != prefixes[1] and all(os.path.isdir(os.path.dirname(p)) for p in prefixes)
        assert first.KernelManager.transport == second.KernelManager.transport == "ipc"
    assert not any(os.path.exists(os.path.dirname(p)) for p in prefixes)  # removed afterwards
