"""Faults a session survives: pause with the reason, the operator checks the cell and confirms, `recover()`, home.

A `RobotFault` (a reflex, a user-stop press, a control error, a gripper past its deadline) ends the episode it happened
in; that episode is dropped by the caller (never stored, never learned from). `pause_and_recover` then runs the same
sequence in every command that drives the arm (finetune's agent, collect, calibrate):

1. say why the run paused (the fault's message: what the arm reported);
2. wait for the operator's confirmation (`confirm`: the teleop's keep key or Enter; an e-stop there ends the run);
3. `robot.recover()`: clears the fault on the arm; if that fails (the user stop still pressed), say so and go back
   to 2;
4. `robot.home()`: the arm goes back to its home pose (and opens the gripper), ready for the next episode.

Nothing is cleared without the confirmation: a fault is never silently un-latched.
"""

from __future__ import annotations

from collections.abc import Callable

from inril_robot.hardware import Robot, RobotFault

MAX_ATTEMPTS = 10  # confirmations before giving up (an arm that never recovers needs Desk, not a loop)


def pause_and_recover(
    robot: Robot, fault: BaseException, confirm: Callable[[str], None], say: Callable[[str], None]
) -> None:
    """Steps 1-4 above; raises `RobotFault` when the arm has not recovered after `MAX_ATTEMPTS` confirmations."""
    say(f"PAUSED: the arm faulted ({fault}); the episode is dropped")
    why = str(fault)
    for _ in range(MAX_ATTEMPTS):
        confirm(
            "check the arm and the cell (release the user stop, clear the obstacle), then confirm to recover "
            "the arm and home it"
        )
        try:
            robot.recover()
            robot.home()
        except RobotFault as e:
            why = str(e)
            say(f"recovery failed: {e}")
            continue
        say("recovered and homed: the run goes on")
        return
    raise RobotFault(f"the arm did not recover after {MAX_ATTEMPTS} confirmations (last: {why}); use Desk")
