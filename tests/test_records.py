"""The kit's records as lessons read them: ``kit_record`` finds, names and refuses."""
import json
import re

import pytest

from lopt_core import kit_record, seed_values, stats
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


def test_seed_values_pairs_a_records_rows_by_label():
    capacity = [{"task": "yesno", "label": "prompt_tuning", "values": {"0": 0.9, "1": 0.8}},
                {"task": "sst2", "label": "prompt_tuning", "values": {"0": 0.5, "1": 0.5}},
                {"task": "yesno", "label": "lopt1 (r=2)", "values": {"0": 0.6, "1": 0.7}}]
    fixes = [{"task": "yesno", "label": "lopt1 (r=2)", "values": {"0": 0.6, "1": 0.7}},  # the same run, twice
             {"task": "yesno", "label": "lopt1 residual", "values": {"1": 0.85}}]
    values = seed_values(capacity, fixes, task="yesno")
    assert values == {"prompt_tuning": {"0": 0.9, "1": 0.8}, "lopt1 (r=2)": {"0": 0.6, "1": 0.7},
                      "lopt1 residual": {"1": 0.85}}
    d = stats.paired_difference(values["lopt1 (r=2)"], values["prompt_tuning"])
    assert d.n == 2 and d.mean == pytest.approx(-0.2)
    assert seed_values(capacity, task="sst2") == {"prompt_tuning": {"0": 0.5, "1": 0.5}}
    assert seed_values(capacity, task="mnli") == {}


def test_seed_values_refuses_an_ambiguous_or_old_record():
    twice = [{"label": "prompt_tuning", "values": {"0": 0.9}}, {"label": "prompt_tuning", "values": {"0": 0.7}}]
    with pytest.raises(ValueError, match="appears twice with different per-seed values"):
        seed_values(twice)
    with pytest.raises(ValueError, match="keeps no per-seed values"):
        seed_values([{"label": "prompt_tuning", "mean": 0.9}])


def test_seed_values_reads_the_committed_records():
    """The rows lessons 03, 06 and 09 pair: every label carries values for the seeds its record ran."""
    diagnosis = kit_record("lopt_diagnosis", quiet=True)
    values = seed_values(diagnosis["capacity"]["summary"], diagnosis["fixes"]["summary"], task="yesno")
    assert set(values["prompt_tuning"]) == {"0", "1", "2"}
    assert any("(the default)" in label for label in values)
    report = kit_record("iapt_report", quiet=True)
    at = seed_values(report["mixture"]["test_exact_match"], budget="35k")
    assert any(label.startswith("iapt (") for label in at) and len(at) >= 2
