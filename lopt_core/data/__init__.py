"""Data: tasks (rows, split roles, verbalisers), task files, file formats, batching and lengths, batch order."""
from lopt_core.data.batching import LengthPolicy
from lopt_core.data.formats import DataError
from lopt_core.data.sampler import batch_indices
from lopt_core.data.task_files import TaskFileError, load_task_file
from lopt_core.data.tasks import SPLITS, Task, Verbalizer, list_tasks, load_task, register_task, task_description

__all__ = ["DataError", "LengthPolicy", "SPLITS", "Task", "TaskFileError", "Verbalizer", "batch_indices",
           "list_tasks", "load_task", "load_task_file", "register_task", "task_description"]
