"""gateway.credentials: a channel refusing our credentials is held out of routing until it accepts them again."""

from __future__ import annotations

import pytest

from channels.contract import CREDENTIALS_REJECTED, Outcome, OutcomeStatus, pending, refused_request, succeeded
from gateway import metrics
from gateway.credentials import CredentialsGuard, credentials_accepted
from gateway.obs.series import declare_channel_series
from routing.engine import ChannelState, Router
from tests.unit.routing.helpers import make_router, withhold

REFUSED = Outcome(
    OutcomeStatus.FAILED, CREDENTIALS_REJECTED, raw_code="SIGN_ERROR", safe_elsewhere=True, credentials_rejected=True
)


def _refusals(channel: str) -> float:
    value: float = metrics.CHANNEL_CREDENTIALS_REJECTED.labels(channel=channel)._value.get()
    return value


def _routable(router: Router) -> list[str]:
    return [s.channel_id for s in router.decide(withhold()).ranked]


@pytest.fixture()
def router() -> Router:
    return make_router(exploration=0)


def test_a_refusal_is_counted_and_holds_the_channel(router: Router) -> None:
    guard = CredentialsGuard(router)
    before = _refusals("a")
    guard.observe("a", REFUSED)
    assert _refusals("a") == before + 1
    assert guard.held() == {"a"}
    assert "a" not in _routable(router)
    decision = router.decide(withhold())
    assert ("a", "state") in {(r.channel_id, r.filter) for r in decision.rejected}
    guard.observe("a", REFUSED)  # still refused: counted again, still held
    assert _refusals("a") == before + 2 and guard.held() == {"a"}


def test_an_accepted_call_ends_the_hold_and_restores_the_state(router: Router) -> None:
    guard = CredentialsGuard(router)
    router.set_state("b", ChannelState.DRAINING)
    guard.observe("a", REFUSED)
    guard.observe("b", REFUSED)
    assert router.state("b") is ChannelState.DISABLED
    guard.observe("a", succeeded("10000", amount=100))  # e.g. a poll of a pending attempt got a result
    guard.observe("b", pending("NOT_FOUND", "ORDER_NOT_EXIST", not_found=True))
    assert guard.held() == frozenset()
    assert router.state("a") is ChannelState.ENABLED
    assert router.state("b") is ChannelState.DRAINING  # what it was before the hold
    assert "a" in _routable(router)


@pytest.mark.parametrize(
    "outcome",
    [
        pending("TIMEOUT"),  # no answer: says nothing about our credentials
        Outcome(OutcomeStatus.FAILED, "CONNECTION_FAILED", safe_elsewhere=True),  # never sent
        Outcome(OutcomeStatus.FAILED, "CHANNEL_BUSY", raw_code="FREQUENCY_LIMITED", safe_elsewhere=True),
        pending("UNVERIFIED_RESPONSE"),
        refused_request(REFUSED),  # a poll refused the same way
    ],
)
def test_answers_that_do_not_prove_accepted_credentials_keep_the_hold(router: Router, outcome: Outcome) -> None:
    guard = CredentialsGuard(router)
    guard.observe("a", REFUSED)
    guard.observe("a", outcome)
    assert guard.held() == {"a"} and router.state("a") is ChannelState.DISABLED


def test_accepted_means_processed() -> None:
    assert credentials_accepted(succeeded())
    assert credentials_accepted(Outcome(OutcomeStatus.FAILED, "INSUFFICIENT_FUNDS", payer_attributable=True))
    assert credentials_accepted(pending("NOT_FOUND", not_found=True))
    assert not credentials_accepted(pending("PROCESSING"))
    assert not credentials_accepted(REFUSED)


def test_an_operator_setting_the_state_ends_the_hold_and_their_state_stands(router: Router) -> None:
    guard = CredentialsGuard(router)
    guard.observe("a", REFUSED)
    guard.release("a", "operator ops set disabled", restore=False)  # what SetChannelState does first
    router.set_state("a", ChannelState.DISABLED)
    guard.observe("a", succeeded())
    assert router.state("a") is ChannelState.DISABLED  # not re-enabled behind the operator's back
    router.set_state("a", ChannelState.ENABLED)
    guard.observe("a", REFUSED)  # enabled while still broken: held again
    assert guard.held() == {"a"} and router.state("a") is ChannelState.DISABLED


def test_a_channel_already_disabled_by_an_operator_is_counted_not_restored(router: Router) -> None:
    guard = CredentialsGuard(router)
    router.set_state("c", ChannelState.DISABLED)
    before = _refusals("c")
    guard.observe("c", REFUSED)  # a poll of one of its pending attempts
    assert _refusals("c") == before + 1
    assert guard.held() == frozenset()
    guard.observe("c", succeeded())
    assert router.state("c") is ChannelState.DISABLED


def test_unknown_channels_are_counted_only(router: Router) -> None:
    guard = CredentialsGuard(router)
    guard.observe("gone", REFUSED)
    assert guard.held() == frozenset()


def test_the_counter_exists_at_zero_from_start_up() -> None:
    declare_channel_series(["cred-series-bank"], operations=["withhold"])
    assert _refusals("cred-series-bank") == 0
