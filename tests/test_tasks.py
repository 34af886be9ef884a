import hashlib
import importlib.util
import json

import pytest
from conftest import ROOT, shared_data

from lopt_core.data import Task, Verbalizer, formats, hub, list_tasks, load_task
from lopt_core.data.formats import DataError

BUILTIN = {"sentiment": (600, 200, 200), "topic": (600, 200, 200), "yesno": (400, 150, 150),
           "restaurant": (300, 50, 50), "instructions": (800, 200, 200)}


@pytest.mark.parametrize("name", list(BUILTIN))
def test_builtin_tasks_load_with_their_sizes(name):
    task = load_task(name)
    assert tuple(len(task.splits[s]) for s in ("train", "validation", "test")) == BUILTIN[name]
    row = task.examples("train", 1)[0]
    assert task.prompt(row).strip()


@pytest.mark.parametrize("name", ["sentiment", "topic", "yesno"])
def test_builtin_classification_splits_are_balanced_and_disjoint(name):
    task = load_task(name)
    for split in ("train", "validation", "test"):
        labels = [r["label"] for r in task.splits[split]]
        shares = [labels.count(c) / len(labels) for c in range(task.num_classes)]
        assert min(shares) > 0.6 / task.num_classes
    train = {task.prompt(r) for r in task.splits["train"]}
    assert not train & {task.prompt(r) for r in task.splits["test"]}


def test_sha256sums_match_the_files():
    lines = (ROOT / "data" / "SHA256SUMS").read_text().splitlines()
    assert len(lines) == 15
    for line in lines:
        digest, rel = line.split()
        assert hashlib.sha256((ROOT / "data" / rel).read_bytes()).hexdigest() == digest, rel


def test_generator_reproduces_the_committed_files(tmp_path):
    spec = importlib.util.spec_from_file_location("make_builtin", ROOT / "data" / "make_builtin.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write_all(tmp_path)
    assert (tmp_path / "SHA256SUMS").read_text() == (ROOT / "data" / "SHA256SUMS").read_text()


def test_restaurant_rows_are_linearised_and_keep_all_references():
    task = load_task("restaurant")
    row = task.splits["validation"][0]
    assert " : " in row["table"] and " | " in row["table"]
    assert len(row["references"]) >= 2
    expanded = task.examples("validation", 1, expand_references=True)
    assert [r["target"] for r in expanded] == row["references"]


def test_parse_and_linearise_mr():
    assert formats.parse_mr("name[The Eagle], food[French]") == [("name", "The Eagle"), ("food", "French")]
    assert formats.linearise_mr("name[The Eagle], customer rating[5 out of 5]") == \
        "name : The Eagle | customer rating : 5 out of 5"
    with pytest.raises(ValueError, match="meaning representation"):
        formats.parse_mr("The Eagle serves French food")


# ------------------------------------------------------------------------------ file formats
def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_glue_tsv_reads_sentences_and_labels(tmp_path):
    rows = formats.read_glue_tsv(write(tmp_path / "a.tsv", 'sentence\tlabel\nit \'s "great"\t1\ndull\t0\n'))
    assert rows == [{"text": 'it \'s "great"', "label": 1}, {"text": "dull", "label": 0}]


@pytest.mark.parametrize("content, line, message", [
    ("text\tlabel\nfine\t1\n", 1, "missing column 'sentence'"),
    ("sentence\tlabel\nfine\t1\nbad\t7\n", 3, "unknown label '7'"),
    ("sentence\tlabel\nfine\t1\n \t0\n", 3, "empty text"),
    ("sentence\tlabel\nfine\t1\t3\n", 2, "expected 2 tab-separated fields"),
])
def test_glue_tsv_errors_name_file_and_line(tmp_path, content, line, message):
    path = write(tmp_path / "bad.tsv", content)
    with pytest.raises(DataError) as err:
        formats.read_glue_tsv(path)
    assert f"{path}:{line}:" in str(err.value) and message in str(err.value)


def test_ag_news_csv_with_and_without_header(tmp_path):
    body = '"3","Wall St. Bears","Short sellers are back."\n"2","Cup final","Late goal."\n'
    for text in ("Class Index,Title,Description\n" + body, body):
        rows = formats.read_ag_news_csv(write(tmp_path / "ag.csv", text))
        assert [r["label"] for r in rows] == [2, 1] and rows[0]["title"] == "Wall St. Bears"
    with pytest.raises(DataError, match=r"ag.csv:2: unknown label '5'"):
        formats.read_ag_news_csv(write(tmp_path / "ag.csv", '"1","a","b"\n"5","c","d"\n'))


def test_superglue_jsonl_tasks(tmp_path):
    boolq = write(tmp_path / "b.jsonl", json.dumps({"question": "is it", "passage": "It is.", "label": True}) + "\n")
    assert formats.read_superglue_jsonl(boolq, "boolq")[0]["label"] == 1
    rte = write(tmp_path / "r.jsonl",
                json.dumps({"premise": "A.", "hypothesis": "B.", "label": "not_entailment"}) + "\n")
    assert formats.read_superglue_jsonl(rte, "rte")[0]["label"] == 1
    cb = write(tmp_path / "c.jsonl", "\n".join(json.dumps({"premise": "A.", "hypothesis": "B.", "label": lab})
                                              for lab in ("entailment", "contradiction", "neutral")) + "\n")
    assert [r["label"] for r in formats.read_superglue_jsonl(cb, "cb")] == [0, 1, 2]
    missing = write(tmp_path / "m.jsonl", json.dumps({"premise": "A.", "label": "neutral"}) + "\n")
    with pytest.raises(DataError, match=r"m.jsonl:1: missing field 'hypothesis'"):
        formats.read_superglue_jsonl(missing, "cb")
    broken = write(tmp_path / "x.jsonl", '{"premise": "A."\n')
    with pytest.raises(DataError, match=r"x.jsonl:1: not valid JSON"):
        formats.read_superglue_jsonl(broken, "cb")


def test_e2e_csv_groups_references_per_mr(tmp_path):
    path = write(tmp_path / "e2e.csv", 'mr,ref\n"name[A], food[French]",A serves French food.\n'
                                       '"name[B], area[riverside]",B is by the river.\n'
                                       '"name[A], food[French]","A is French, and nice."\n')
    rows = formats.read_e2e_csv(path)
    assert rows == [{"mr": "name[A], food[French]", "references": ["A serves French food.", "A is French, and nice."]},
                    {"mr": "name[B], area[riverside]", "references": ["B is by the river."]}]
    bad = write(tmp_path / "bad.csv", 'mr,ref\n"name[A]",fine\n"name[B]",\n')
    with pytest.raises(DataError, match=r"bad.csv:3: empty text in column 'ref'"):
        formats.read_e2e_csv(bad)


def test_instruction_jsonl(tmp_path):
    path = write(tmp_path / "i.jsonl", json.dumps({"instruction": "Add.", "input": "1 2", "output": "3"}) + "\n"
                 + json.dumps({"instruction": "Say hi.", "input": "", "output": "hi"}) + "\n")
    assert formats.read_instruction_jsonl(path)[1] == {"instruction": "Say hi.", "input": "", "output": "hi"}
    bad_type = write(tmp_path / "t.jsonl", json.dumps({"instruction": "A.", "input": "", "output": "b",
                                                        "answer_type": "maybe"}) + "\n")
    with pytest.raises(DataError, match=r"t.jsonl:1: answer_type must be"):
        formats.read_instruction_jsonl(bad_type)
    with pytest.raises(DataError, match=r"i.jsonl:1: empty text in column 'output'"):
        formats.read_instruction_jsonl(write(tmp_path / "i.jsonl", json.dumps(
            {"instruction": "Add.", "input": "1", "output": ""}) + "\n"))


def test_file_task_reads_a_folder_and_remaps_splits(tmp_path):
    write(tmp_path / "devset.csv", 'mr,ref\n"name[A], food[French]",A serves French food.\n')
    with pytest.raises(ValueError, match="cannot carve 'validation' from 1 train rows of 1 source"):
        load_task("e2e", path=tmp_path, splits={"train": "devset.csv"})
    write(tmp_path / "devset.csv", 'mr,ref\n' + "".join(f'"name[{c}], food[French]",{c} serves French food.\n'
                                                         for c in "ABCD"))
    task = load_task("e2e", path=tmp_path, splits={"train": "devset.csv"})
    assert set(task.splits) == {"train", "validation"} and len(task.splits["validation"]) == 1
    assert task.splits["train"][0]["table"].endswith("| food : French")
    with pytest.raises(KeyError, match="has no 'test' split"):
        task.examples("test")


def test_splits_override_the_default_files_split_by_split(tmp_path):
    write(tmp_path / "devset.csv", 'mr,ref\n' + "".join(f'"name[{c}], food[French]",{c} serves French food.\n'
                                                        for c in "ABCD"))
    write(tmp_path / "testset_w_refs.csv", 'mr,ref\n"name[E], food[Thai]",E serves Thai food.\n')
    task = load_task("e2e", path=tmp_path, splits={"train": "devset.csv"})
    assert [r["mr"] for r in task.splits["test"]] == ["name[E], food[Thai]"]  # the default test file stays
    assert len(task.splits["train"]) == 3 and len(task.splits["validation"]) == 1  # devset.csv is train only
    assert "carved from train" in task.split_notes["validation"]
    for name in ("small.tsv", "dev.tsv", "test.tsv"):
        write(tmp_path / name, "sentence\tlabel\n" + "".join(f"{name} {i}\t{i % 2}\n" for i in range(4)))
    task = load_task("sst2", path=tmp_path, splits={"train": "small.tsv"})
    assert {s: rows[0]["text"] for s, rows in task.splits.items()} == \
        {"train": "small.tsv 0", "validation": "dev.tsv 0", "test": "test.tsv 0"}
    assert task.split_notes == {}


def test_file_task_without_files_explains_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("LOPT_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="LOPT_DATA_DIR"):
        load_task("sst2")
    with pytest.raises(FileNotFoundError, match="none of train.tsv, dev.tsv, test.tsv found"):
        load_task("sst2", path=tmp_path)


def test_unknown_task_lists_the_registered_ones():
    with pytest.raises(KeyError, match="sentiment"):
        load_task("sentimant")
    assert {"sentiment", "topic", "yesno", "restaurant", "instructions", "sst2", "e2e"} <= set(list_tasks())


def test_hub_adapters_map_hub_schemas(tmp_path):
    datasets = pytest.importorskip("datasets")
    sst = datasets.Dataset.from_dict({"sentence": ["good ", "bad"], "label": [1, -1], "idx": [0, 1]})
    assert hub.convert_records(sst, hub.hf_sst2, "glue/sst2") == [{"text": "good", "label": 1}]
    cb = datasets.Dataset.from_dict({"premise": ["A."], "hypothesis": ["B."], "label": [2], "idx": [0]})
    assert hub.convert_records(cb, hub.hf_superglue("cb"), "super_glue/cb")[0]["label"] == 2
    e2e = datasets.load_dataset("json", data_files=str(write(tmp_path / "e.jsonl", "\n".join(
        json.dumps({"meaning_representation": "name[A]", "human_reference": r}) for r in ("x", "y")))))["train"]
    assert hub.hf_e2e(list(e2e)) == [{"mr": "name[A]", "references": ["x", "y"]}]
    with pytest.raises(DataError, match="record 1"):
        hub.convert_records(datasets.Dataset.from_dict({"sentence": ["a"], "label": [5]}), hub.hf_sst2, "glue/sst2")


def test_hub_source_offline_is_a_clear_error(monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setattr("lopt_core.utils.hub_reachable", lambda *a, **k: False)
    with pytest.raises(ConnectionError, match="path=..."):
        load_task("sst2", source="hf")


# ------------------------------------------------------------------------------ verbaliser, batches
@pytest.mark.slow
def test_verbalizer_detects_multi_token_words(tiny_llama, embedded):
    assert not Verbalizer.build((" negative", " positive"), tiny_llama.tokenizer).single_token
    assert Verbalizer.build(("a", "b"), tiny_llama.tokenizer).single_token
    assert Verbalizer.build((" negative", " positive"), embedded.tokenizer).single_token
    with pytest.raises(ValueError, match="not distinct"):
        Verbalizer.build(("a", "a"), tiny_llama.tokenizer)


def test_collate_masks_for_classification_and_generation(tiny_llama):
    tok = tiny_llama.tokenizer
    task = load_task("sentiment")
    rows = task.examples("train", 3)
    batch = task.collate(rows, tok)
    lengths = [len(tok(task.prompt(r))["input_ids"]) for r in rows]
    assert batch["attention_mask"].sum(1).tolist() == lengths == batch["prompt_mask"].sum(1).tolist()
    assert batch["labels"].tolist() == [r["label"] for r in rows]
    gen = load_task("restaurant")
    grow = gen.examples("train", 1, expand_references=True)[:2]
    gb = gen.collate(grow, tok)
    for i, r in enumerate(grow):
        target = gb["input_ids"][i][gb["target_mask"][i].bool()].tolist()
        assert target == tok(" " + r["target"])["input_ids"] + [tok.eos_token_id]
        assert not (gb["prompt_mask"][i] & gb["target_mask"][i]).any()


def test_collate_truncates_the_start_of_long_prompts(tiny_llama):
    task = Task("t", "classification", "{text}\nAnswer:", {"train": [{"text": "x" * 500, "label": 0}]},
                label_words=("a", "b"))
    batch = task.collate(task.splits["train"], tiny_llama.tokenizer, max_length=64)
    assert batch["input_ids"].shape[1] == 64
    assert tiny_llama.tokenizer.decode(batch["input_ids"][0]).endswith("\nAnswer:")


def test_task_checks_its_kind():
    with pytest.raises(ValueError, match="classification"):
        Task("t", "regression", "{x}", {})
    with pytest.raises(ValueError, match="at least 2 label words"):
        Task("t", "classification", "{x}", {}, label_words=(" a",))


# ------------------------------------------------------------------------------ real data (optional)
@pytest.mark.realdata
def test_real_sst2_through_the_glue_loader():
    task = load_task("sst2", path=shared_data("sst2"))
    assert {k: len(v) for k, v in task.splits.items()} == {"train": 6920, "validation": 872, "test": 1821}
    labels = [r["label"] for r in task.splits["validation"]]
    assert labels.count(0) == 428 and labels.count(1) == 444


@pytest.mark.realdata
def test_real_e2e_groups_references_and_trains_on_devset_without_trainset():
    task = load_task("e2e", path=shared_data("e2e"))  # the public trainset.csv is not there
    train, validation = task.splits["train"], task.splits["validation"]
    assert len(train) + len(validation) == 547 and len(validation) == 55
    assert sum(len(r["references"]) for r in train + validation) == 4672
    assert task.split_notes["train"] == "devset.csv (trainset.csv is absent)"
    assert len(task.splits["test"]) == 630 and sum(len(r["references"]) for r in task.splits["test"]) == 4693


# ------------------------------------------------------------------------------ split roles
def rows_of(n, groups=None):
    return [{"text": f"sentence {i % (groups or n)}", "label": i % 2} for i in range(n)]


def test_a_task_without_validation_carves_it_from_train_by_source_with_a_seed():
    task = Task("t", "classification", "{text} =", {"train": rows_of(300, groups=100), "test": rows_of(10)},
                label_words=("a", "b")).assign_roles()
    val, train = task.splits["validation"], task.splits["train"]
    assert len(val) + len(train) == 300 and 30 <= len(val) <= 32  # 10% of 300, whole groups of 3
    assert not {r["text"] for r in val} & {r["text"] for r in train}  # a source stays on one side
    assert "carved from train: " in task.split_notes["validation"] and "seed 0" in task.split_notes["validation"]
    again = Task("t", "classification", "{text} =", {"train": rows_of(300, groups=100)},
                 label_words=("a", "b")).assign_roles()
    assert again.splits["validation"] == val  # seeded: the same carve every time
    big = Task("t", "classification", "{text} =", {"train": rows_of(8000)}, label_words=("a", "b")).assign_roles()
    assert len(big.splits["validation"]) == 500  # min(500 rows, 10%)


def test_a_task_whose_only_held_out_split_is_dev_reports_it_as_test():
    task = Task("t", "classification", "{text} =", {"train": rows_of(200), "dev": rows_of(40)},
                label_words=("a", "b")).assign_roles()
    assert task.splits["test"] == rows_of(40) and len(task.splits["validation"]) == 20
    assert "reported as test" in task.split_notes["test"] and "no labelled test" in task.split_notes["test"]
    assert "reported as test" in task.summary()


def test_dev_is_a_loading_alias_and_a_clear_error_afterwards():
    task = load_task("sentiment")
    assert set(task.splits) == {"train", "validation", "test"}
    with pytest.raises(KeyError, match="calls it 'validation'.*tables report 'test'"):
        task.examples("dev")


def test_copy_and_carve_leave_the_original_alone():
    task = load_task("yesno")
    copy = task.copy().carve("outer", "train")
    assert "outer" not in task.splits and len(task.splits["train"]) == 400
    assert len(copy.splits["outer"]) == 40 and len(copy.splits["train"]) == 360


def test_limit_keeps_the_first_rows_of_a_split_and_notes_nothing():
    task = load_task("sentiment")
    train, notes = task.splits["train"], dict(task.split_notes)
    assert task.limit("train", 50) is task and task.splits["train"] == train[:50] and task.split_notes == notes
    for keep_all in (None, 0):
        assert task.limit("train", keep_all).splits["train"] == train[:50]
    with pytest.raises(KeyError, match="has no 'dev' split"):
        task.limit("dev", 5)


def test_jsonl_errors_name_the_line_of_the_file_blank_lines_counted(tmp_path):
    path = write(tmp_path / "i.jsonl", json.dumps({"instruction": "Add.", "input": "1", "output": "2"}) + "\n\n"
                 + json.dumps({"instruction": "Say.", "input": ""}) + "\n")
    with pytest.raises(DataError, match=r"i.jsonl:3: missing field 'output'"):
        formats.read_instruction_jsonl(path)
    with pytest.raises(DataError, match=r"x.jsonl:2: each line must be a JSON object"):
        formats.read_jsonl(write(tmp_path / "x.jsonl", "{}\n[1]\n"))


def test_the_old_module_path_still_imports_with_a_warning():
    import importlib
    import sys

    sys.modules.pop("lopt_core.data.tasks", None)
    with pytest.warns(DeprecationWarning, match="lopt_core.data.task and lopt_core.data.registry"):
        old = importlib.import_module("lopt_core.data.tasks")
    assert old.load_task is load_task and old.Task is Task and old.load_task_file is not None


@pytest.mark.realdata
def test_local_sst2_validates_on_dev_and_tests_on_test():
    task = load_task("sst2", path=shared_data("sst2"))
    assert {k: len(v) for k, v in task.splits.items()} == {"train": 6920, "validation": 872, "test": 1821}
    assert task.split_notes == {}


@pytest.mark.realdata
def test_e2e_trained_on_devset_carves_ten_percent_of_its_mrs():
    task = load_task("e2e", path=shared_data("e2e"), splits={"train": "devset.csv", "test": "testset_w_refs.csv"})
    assert len(task.splits["validation"]) == 55 and len(task.splits["train"]) == 492
    assert not {r["mr"] for r in task.splits["validation"]} & {r["mr"] for r in task.splits["train"]}
    assert len(task.splits["test"]) == 630
