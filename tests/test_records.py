"""The kit's records as lessons read them: ``kit_record`` finds, names and refuses."""
import json
import re

import pytest

from lopt_core import kit_record
from lopt_core.lab.notebooks import all_notebooks
from lopt_core.lab.records import RESULTS, writer


def test_reads_a_record_and_says_where_it_came_from(tmp_path, capsys):
    (tmp_path / "lopt_diagnosis.json").write_text(json.dumps({"date": "2026-12-06 04:22:36", "steps": 120}))
    assert kit_record("lopt_diagnosis", results=tmp_path) == {"date": "2026-12-06 04:22:36", "steps": 120}
    assert kit_record("lopt_diagnosis.json", results=tmp_path, quiet=True)["steps"] == 120
    said = capsys.readouterr().out.strip().splitlines()
    assert said == ["the kit's record 'lopt_diagnosis' (benchmarks/lopt_diagnosis.py, 2026-12-06)"]


def test_a_missing_record_is_none_with_the_script_that_writes_it(tmp_path, capsys):
    assert kit_record("family_runs", results=tmp_path) is None
    out = capsys.readouterr().out
    assert "python benchmarks/family.py writes it" in out and str(tmp_path) in out
    assert kit_record("no_such_record", results=tmp_path) is None
    assert "the scripts in benchmarks/ write the records" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["", "../secrets", "results/family", ".json"])
def test_refuses_anything_but_a_stem(name):
    with pytest.raises(ValueError, match="file stem"):
        kit_record(name)


def test_every_record_the_lessons_read_is_committed_and_has_a_writer():
    """Each record a notebook reads by name exists in a checkout and names the script that rewrites it."""
    read = {stem for path in all_notebooks()
            for stem in re.findall(r'kit_record\(\\?"(\w+)', path.read_text(encoding="utf-8"))}
    assert {"lopt_diagnosis", "family", "demo_check"} <= read, read  # the pattern still finds the lessons' reads
    for stem in sorted(read):
        assert (RESULTS / f"{stem}.json").is_file(), stem
        assert writer(stem) is not None, stem
