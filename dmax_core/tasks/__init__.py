"""Tasks: the embedded generated ones (`ledger`, the task of every shipped preset but `running_total`, and
`running_total`), one file each.

Every module of this package is imported here, so each task class in it registers itself by name in
`TASKS`; adding a task is one new file (`base.Task` says what it must provide).
"""

from dmax_core.registry import import_submodules
from dmax_core.tasks.base import TASKS, GeneratedTask, Problem, Task, load_problems, save_problems

import_submodules(__name__, __path__)


def build_task(name: str, **knobs: object) -> Task:
    """The registered task `name` with these knobs (`ValueError` names an unknown task or a bad knob)."""
    return TASKS.build(name, knobs)


__all__ = ["TASKS", "GeneratedTask", "Problem", "Task", "build_task", "load_problems", "save_problems"]
