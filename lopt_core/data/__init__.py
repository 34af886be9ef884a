"""Data: tasks (rows, split roles, verbalisers), task files, file formats, batching and lengths, batch order."""
from lopt_core.data import loaders  # noqa: F401  (registers the kit's tasks)
from lopt_core.data.batching import LengthPolicy
from lopt_core.data.formats import DataError
from lopt_core.data.registry import list_tasks, load_task, register_task, task_description
from lopt_core.data.sampler import batch_indices
from lopt_core.data.task import SPLITS, Task, Verbalizer
from lopt_core.data.task_files import TaskFileError, load_task_file

__all__ = ["DataError", "LengthPolicy", "SPLITS", "Task", "TaskFileError", "Verbalizer", "batch_indices",
           "list_tasks", "load_task", "load_task_file", "register_task", "task_description"]
