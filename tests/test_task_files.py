"""Task files: the user's own CSV, TSV and JSONL data described by a JSON or YAML spec, no Python."""
import json

import pytest

from lopt_core.cli import main
from lopt_core.data import load_task_file
from lopt_core.data.formats import DataError
from lopt_core.data.task_files import TaskFileError

REVIEWS = ["a lovely film", "dull and long", "loved it", "not for me", "so funny", "a bore", "great cast",
           "weak plot", "moving", "flat", "a gem", "too slow", "warm and wise", "tiresome", "a delight", "lifeless",
           "sharp and kind", "muddled", "bright", "grim", "charming", "stale", "tender", "clumsy"]


def write(folder, name, text):
    (folder / name).write_text(text, encoding="utf-8")
    return folder / name


def spec(folder, **fields):
    return write(folder, "spec.json", json.dumps(fields))


def label_text_csv(folder, name, rows):
    """A headerless CSV whose columns are label,text."""
    return write(folder, name, "".join(f"{i % 2},\"{t}\"\n" for i, t in enumerate(rows)))


def test_a_headerless_label_text_csv(tmp_path):
    label_text_csv(tmp_path, "train.csv", REVIEWS[:20])
    label_text_csv(tmp_path, "test.csv", REVIEWS[20:])
    task = load_task_file(spec(tmp_path, name="reviews", kind="classification",
                               files={"train": "train.csv", "test": "test.csv"}, columns=["label", "text"],
                               text_columns=["text"], label_column="label",
                               label_words={"0": " positive", "1": " negative"},
                               template="Review: {text}\nSentiment:"))
    assert task.kind == "classification" and task.label_words == (" positive", " negative")
    assert len(task.splits["test"]) == 4 and task.splits["test"][0] == {"text": "charming", "label": 0}
    assert len(task.splits["validation"]) == 2 and len(task.splits["train"]) == 18  # carved: 10% of 20
    assert "carved from train" in task.split_notes["validation"]
    assert task.prompt(task.splits["test"][1]) == "Review: stale\nSentiment:"


def test_a_tsv_with_a_header_and_dev_as_validation(tmp_path):
    for name, rows in (("train.tsv", REVIEWS[:16]), ("dev.tsv", REVIEWS[16:20]), ("test.tsv", REVIEWS[20:])):
        write(tmp_path, name, "sentence\tpolarity\tsource\n" + "".join(
            f"{t}\t{'pos' if i % 2 == 0 else 'neg'}\tweb\n" for i, t in enumerate(rows)))
    task = load_task_file(spec(tmp_path, name="pol", kind="classification",
                               files={"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"},
                               text_columns=["sentence"], label_column="polarity",
                               label_words={"neg": " bad", "pos": " good"}))
    assert {k: len(v) for k, v in task.splits.items()} == {"train": 16, "validation": 4, "test": 4}
    assert task.splits["validation"][0] == {"sentence": "sharp and kind", "label": 1}
    assert task.template == "Sentence: {sentence}\nAnswer:" and not task.split_notes


def test_a_jsonl_generation_task_groups_references_by_source(tmp_path):
    rows = [{"mr": f"name[{n}], food[{f}]", "ref": f"{n} serves {f} food{end}"}
            for n in ("Aro", "Bel", "Cim", "Dun", "Eft", "Fal", "Gor", "Hul", "Ibs", "Jat")
            for f in ("Thai",) for end in (".", " and more.")]
    write(tmp_path, "all.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    write(tmp_path, "spec.yaml", "name: names\nkind: generation\nfiles: {train: all.jsonl}\ntext_columns: [mr]\n"
                                 "target_column: ref\ntemplate: \"Table: {mr}\\nText:\"\n")
    task = load_task_file(tmp_path / "spec.yaml")
    train, validation = task.splits["train"], task.splits["validation"]
    assert len(train) + len(validation) == 10 and len(validation) == 1  # one meaning representation, both refs
    assert validation[0]["references"][1].endswith(" and more.") and len(validation[0]["references"]) == 2
    assert "test" not in task.splits or not task.splits["test"]


@pytest.mark.parametrize("change, message", [
    ({"kind": "regression"}, "field 'kind' must be 'classification' or 'generation', got 'regression'"),
    ({"text_column": ["text"]}, "unknown field 'text_column'"),
    ({"label_column": None}, "field 'label_column' must be a str, got NoneType"),
    ({"template": "Review: {review}"}, r"'template' reads \['review'\], which are not in 'text_columns'"),
    ({"label_words": {"0": " yes"}}, "'label_words' must map two or more label values"),
    ({"files": {"train": "train.xlsx"}}, "train.xlsx is not a CSV, TSV or JSONL file"),
    ({"files": {"training": "train.csv"}}, "'files' has a split 'training'"),
    ({"files": {"train": "missing.csv"}}, "missing.csv does not exist"),
])
def test_bad_specs_name_the_field(tmp_path, change, message):
    write(tmp_path, "train.csv", "label,text\n0,fine\n1,bad\n")
    fields = {"name": "t", "kind": "classification", "files": {"train": "train.csv"}, "text_columns": ["text"],
              "label_column": "label", "label_words": {"0": " no", "1": " yes"}, **change}
    with pytest.raises((TaskFileError, FileNotFoundError), match=message):
        load_task_file(spec(tmp_path, **fields))


def test_a_missing_field_and_broken_json_are_named(tmp_path):
    with pytest.raises(TaskFileError, match="missing field 'files'"):
        load_task_file(spec(tmp_path, name="t", kind="generation", text_columns=["a"], target_column="b"))
    with pytest.raises(TaskFileError, match=r"spec.json:2: not valid JSON"):
        load_task_file(write(tmp_path, "spec.json", '{"name": "t",\n "kind": }'))
    with pytest.raises(TaskFileError, match="a generation task needs the field 'target_column'"):
        load_task_file(spec(tmp_path, name="t", kind="generation", files={}, text_columns=["a"]))


@pytest.mark.parametrize("file, text, message", [
    ("train.csv", "label,text\n0,fine\n2,bad\n", r"train.csv:3: label '2' in column 'label' is not in 'label_words'"),
    ("train.csv", "label,text\n0,fine\n1,  \n", r"train.csv:3: empty text in column 'text'"),
    ("train.csv", "label,text\n0,fine\n1,bad,extra\n", r"train.csv:3: 3 fields, but there are 2 columns"),
    ("train.csv", "label,review\n0,fine\n", r"train.csv:2: no column 'text' \(the row has: label, review\)"),
    ("train.jsonl", '{"text": "fine", "label": "0"}\n\n{"text": "bad",\n', r"train.jsonl:3: not valid JSON"),
    ("train.jsonl", '{"text": "fine", "label": "0"}\n["bad", "1"]\n',
     r"train.jsonl:2: each line must be a JSON object"),
])
def test_bad_rows_name_the_file_and_line(tmp_path, file, text, message):
    """CSV and JSONL alike (blank lines counted: the line is the file's)."""
    write(tmp_path, file, text)
    with pytest.raises(DataError, match=message):
        load_task_file(spec(tmp_path, name="t", kind="classification", files={"train": file},
                            text_columns=["text"], label_column="label", label_words={"0": " no", "1": " yes"}))


def test_train_and_evaluate_a_task_file_from_the_command_line(tmp_path, capsys):
    label_text_csv(tmp_path, "train.csv", REVIEWS[:20])
    label_text_csv(tmp_path, "test.csv", REVIEWS[20:])
    path = spec(tmp_path, name="reviews", kind="classification", files={"train": "train.csv", "test": "test.csv"},
                columns=["label", "text"], text_columns=["text"], label_column="label",
                label_words={"0": " positive", "1": " negative"}, template="Review: {text}\nSentiment:")
    run = tmp_path / "run"
    assert main(["train", "--method", "prompt_tuning", "--task-file", str(path), "--backbone", "tiny-llama",
                 "--prompt-len", "4", "--steps", "2", "--batch-size", "4", "--eval-every", "2", "--no-progress",
                 "--out", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == "reviews" and metrics["test"]["n"] == 4
    assert main(["evaluate", str(run), "--split", "test"]) == 0
    assert json.loads((run / "evaluate-test.json").read_text())["test"] == metrics["test"]
    with pytest.raises(SystemExit):  # one task or the other
        main(["train", "--method", "prompt_tuning", "--task", "sentiment", "--task-file", str(path)])
    assert "not allowed with argument" in capsys.readouterr().err
