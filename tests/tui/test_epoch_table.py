"""The epoch table's rows: one per epoch's end, one per evaluation inside an epoch (eval_strategy: steps)."""

from __future__ import annotations

from engine.events import EpochEnded, Evaluated, StepLogged
from tests.conftest import run_started
from tui.widgets.epoch_table import RunCurves


def test_evaluations_inside_epochs_get_their_own_rows_and_an_epochs_end_shares_its_step() -> None:
    curves = RunCurves.from_events(
        [
            run_started(),
            Evaluated(epoch=0.6, step=3, eval_loss=0.9, accuracy=0.5),
            EpochEnded(epoch=1, step=5, train_loss=0.8, duration_seconds=4.0),
            Evaluated(epoch=1.2, step=6, eval_loss=0.7, accuracy=0.6),
            EpochEnded(epoch=2, step=10, train_loss=0.5, duration_seconds=4.0),
            Evaluated(epoch=2, step=10, eval_loss=0.6, accuracy=0.7, duration_seconds=1.0),
        ]
    )
    rows = [(step, row.epoch, row.train_loss, row.eval_loss) for step, row in sorted(curves.epochs.items())]
    assert rows == [(3, 0.6, None, 0.9), (5, 1, 0.8, None), (6, 1.2, None, 0.7), (10, 2, 0.5, 0.6)]
    assert curves.epochs[10].seconds == 5.0
    assert curves.evals == [(3, 0.9), (6, 0.7), (10, 0.6)]


def test_a_later_session_redoes_the_steps_after_its_start_so_each_step_keeps_one_point() -> None:
    def logged(step: int, loss: float) -> StepLogged:
        return StepLogged(step, 10, 1, loss, 1e-4, 10.0, 1.0, 1.0)

    at_3 = Evaluated(epoch=0.6, step=3, eval_loss=0.9, confusion=[[1, 0], [0, 1]])
    at_5 = Evaluated(epoch=1.0, step=5, eval_loss=0.8, confusion=[[0, 1], [1, 0]])
    killed = [run_started(), *(logged(s, 1.0) for s in (2, 4, 6)), at_3, at_5]
    over = [run_started(start_step=0), *(logged(s, 0.5) for s in (2, 4))]  # no checkpoint: it starts over
    curves = RunCurves.from_events([*killed, *over])
    assert curves.steps == [(2, 0.5), (4, 0.5)] and curves.evals == [] and curves.epochs == {}
    resumed = [run_started(start_step=4), logged(6, 0.2)]  # from the checkpoint of step 4
    curves = RunCurves.from_events([*killed, *resumed])
    assert curves.steps == [(2, 1.0), (4, 1.0), (6, 0.2)] and curves.evals == [(3, 0.9)]
    assert curves.last_confusion is at_3  # the report of step 5 goes with the session that will redo it
