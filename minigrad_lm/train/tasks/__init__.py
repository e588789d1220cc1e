"""The training tasks, one module each: language modelling (``lm``), masked language modelling
(``mlm``), replaced-token detection (``electra``), word2vec's continuous bag of words
(``word2vec``), sentence classification (``classify``),
translation (``translate``) and question answering (``qa``).

Each is a :class:`~.base.Task` that owns its rules (defaults, option checks, model, data,
loss, evaluation, best metric, checkpoint contents); the trainer, the configuration and the
checkpoint code ask :data:`TASKS` and never name a task. Adding one: see the README's
"Adding a task".
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Task
from .classify import ClassifyTask
from .electra import ElectraTask
from .lm import LMTask
from .masked_lm import MaskedLMTask
from .qa import QATask
from .translate import TranslateTask
from .word2vec import Word2VecTask

if TYPE_CHECKING:
    from ...checkpoints.folder import Checkpoint
    from ..config import TrainConfig

__all__ = ["DEFAULT_TASK", "TASKS", "ClassifyTask", "ElectraTask", "LMTask", "MaskedLMTask",
           "QATask", "Task", "TranslateTask", "Word2VecTask", "make_task", "task_name"]

TASKS: dict[str, type[Task]] = {t.name: t for t in (LMTask, MaskedLMTask, ElectraTask,
                                                    Word2VecTask, ClassifyTask, TranslateTask,
                                                    QATask)}
DEFAULT_TASK = LMTask.name


def task_name(values: dict[str, Any]) -> str:
    """The task that options ``values`` train: ``values["task"]``, unless they spell another
    task by its alias (``--task lm --attention bidirectional`` is ``mlm``)."""
    for task in TASKS.values():
        if task.alias and all(values.get(k) == v for k, v in task.alias.items()):
            return task.name
    return values.get("task", DEFAULT_TASK)


def make_task(cfg: TrainConfig, source: Checkpoint | None = None,
              resume: Checkpoint | None = None) -> Task:
    """The task of ``cfg`` with its data read; ``source`` (a resumed or ``--init-from``
    checkpoint) brings its tokenizer, ``resume`` its task's own keys (a classifier's classes)."""
    return TASKS[cfg.task](cfg, source.tokenizer_dict if source is not None else None,
                           resume.extras if resume is not None else None)
