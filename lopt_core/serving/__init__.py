"""Serving: many tasks on one frozen backbone with cached prompts, and export to PEFT and serving engines."""
from lopt_core.serving.interop import export_embeddings, from_peft, load_embeddings, read_sidecar, to_peft
from lopt_core.serving.server import Server, TaskPrompt

__all__ = ["Server", "TaskPrompt", "export_embeddings", "from_peft", "load_embeddings", "read_sidecar", "to_peft"]
