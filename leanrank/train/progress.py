"""What every training loop shows and logs: a rich step bar and an optional TensorBoard writer."""

from __future__ import annotations

from pathlib import Path


def tensorboard_writer(path: Path):
    """A SummaryWriter at ``path``, or None when tensorboard is not installed (it is optional)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(path))


class StepBar:
    """A rich progress bar over optimizer steps with the running loss; plain lines every
    ``every`` steps when the console is not a terminal (logs, CI)."""

    def __init__(self, total: int, done: int, every: int = 50):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
        self.task = self.progress.add_task("train", total=total, completed=done, info="")
        self.loss: float | None = None
        self.every = every
        self.progress.start()

    def advance(self, loss: float) -> None:
        self.loss = loss if self.loss is None else 0.98 * self.loss + 0.02 * loss
        self.progress.update(self.task, advance=1, info=f"loss {self.loss:.4f}")
        task = self.progress.tasks[0]
        if not self.progress.console.is_terminal and task.completed % self.every == 0:
            self.progress.console.print(f"step {task.completed:.0f}/{task.total:.0f} loss {self.loss:.4f} "
                                        f"elapsed {task.elapsed or 0:.0f}s", highlight=False)

    def note(self, text: str) -> None:
        self.progress.console.print(text, highlight=False)

    def stop(self) -> None:
        self.progress.stop()
