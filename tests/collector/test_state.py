"""The collector's state machine (collector/state.py): the states reports show, the typed holds,
the transitions the loop may make and the operator's requests."""

from __future__ import annotations

import pytest

from collector.state import TRANSITIONS, Activity, CollectorState, HoldKind, InvalidTransition


def test_a_session_walks_through_the_documented_activities():
    state = CollectorState()
    assert state.name == "starting" and state.needs_reset
    for activity in ("resetting", "running", "training", "resetting", "running", "resetting", "stopped"):
        state.enter(Activity(activity))
        assert state.name == activity


@pytest.mark.parametrize("start", list(Activity))
def test_transitions_outside_the_table_are_refused(start):
    for target in Activity:
        state = CollectorState()
        state.activity = start
        if target in TRANSITIONS[start]:
            state.enter(target)
            assert state.activity is target
        else:
            with pytest.raises(InvalidTransition, match=f"{start.value} cannot be followed by {target.value}"):
                state.enter(target)
            assert state.activity is start


def test_nothing_follows_stopped_and_running_never_follows_training_without_a_reset():
    assert TRANSITIONS[Activity.stopped] == frozenset()
    assert Activity.running not in TRANSITIONS[Activity.training]
    assert Activity.running not in TRANSITIONS[Activity.starting]


def test_held_and_paused_win_over_the_activity_and_stopping_shows_only_while_running():
    state = CollectorState()
    state.enter(Activity.resetting)
    state.enter(Activity.running)
    state.request_stop()
    assert state.name == "stopping"
    state.pause()
    assert state.name == "paused" and state.keeps_arm_still
    state.hold_for(HoldKind.safety, "repeated safety violations: inspect the arm, then resume")
    assert state.name == "held"
    assert state.hold_reason == "repeated safety violations: inspect the arm, then resume"
    state.resume()
    assert state.name == "stopping" and not state.keeps_arm_still
    state.enter(Activity.training)
    assert state.name == "training"
    state.enter(Activity.stopped)
    state.hold_for(HoldKind.disk, "x")
    assert state.name == "stopped"  # a stopped collector reports stopped, whatever came last


def test_hold_reasons_keep_the_documented_prefixes():
    state = CollectorState()
    assert state.hold_for(HoldKind.disk, "writing events.jsonl failed: full").reason == (
        "disk: writing events.jsonl failed: full"
    )
    assert state.hold_for(HoldKind.store, "free space low").reason == "store: free space low"
    assert state.hold_for(HoldKind.reset, "no safe reset path").reason == "no safe reset path"


def test_only_store_and_link_holds_clear_by_themselves_and_only_once_recovered():
    state = CollectorState()
    asked = []
    by_itself = (HoldKind.store, HoldKind.link)
    for kind in HoldKind:
        state.hold_for(kind, "why")
        state.clear_hold_if_recovered(lambda kind=kind: asked.append(kind) or True)
        assert (state.hold is None) == (kind in by_itself)
    assert asked == list(by_itself)  # recovery is asked about only for those holds
    for kind in by_itself:
        state.hold_for(kind, "behind")
        state.clear_hold_if_recovered(lambda: False)
        assert state.hold is not None and state.hold.kind is kind
    assert state.hold.reason == "link: behind"


def test_an_operator_estop_holds_until_resume_but_one_during_a_stop_ends_the_session():
    state = CollectorState()
    state.request_estop()
    state.estop_done()
    assert state.estopped and state.paused and state.hold.kind is HoldKind.estop
    assert state.take_estop_request() and not state.take_estop_request()
    state.resume()
    assert not (state.estopped or state.paused or state.hold)

    state = CollectorState()
    state.request_stop()
    state.request_estop()
    state.estop_done()
    assert state.estopped and not state.paused and state.hold is None


def test_the_arm_is_moved_home_at_the_end_only_when_nothing_asked_the_operator_to_look_first():
    state = CollectorState()
    assert state.may_move_home()
    expected = {HoldKind.safety: False, HoldKind.reset: False, HoldKind.disk: True, HoldKind.store: True}
    for kind, allowed in expected.items():
        state = CollectorState()
        state.hold_for(kind, "why")
        assert state.may_move_home() is allowed, kind
    state = CollectorState()
    state.request_stop()
    state.request_estop()
    assert not state.may_move_home()
    state.estop_done()
    assert not state.may_move_home()
