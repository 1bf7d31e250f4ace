"""A channel that refuses paygate's credentials is not used until it accepts them again.

A refusal of our credentials (``Outcome.credentials_rejected``: a bad request
signature, a key the channel does not know, a wrong app or merchant id) is
checked by the channel before it processes anything, so the order is FAILED
and safe elsewhere; and it is not about that order: every later call would be
refused the same way. So the first one

* counts in ``paygate_channel_credentials_rejected_total{channel}`` (alert
  PaygateChannelCredentialsRejected, docs/OBSERVABILITY.md),
* is logged at ERROR, and
* **holds the channel**: the router's state for it becomes DISABLED, so new
  flows are not routed there (the decision names the ``state`` filter) while
  attempts already sent there are still polled.

The hold ends, and the state from before it comes back, when a call to the
channel is answered in a way only accepted credentials get: a success, a
definite failure that is not "refused before processing", or "no such
order". Polls of the channel's pending attempts keep making such calls. An
operator ends it too, by setting the channel's state (SetChannelState, e.g.
ENABLED once the key is fixed: :meth:`CredentialsGuard.release` with
``restore=False``); a restart with corrected configuration starts without
holds (they live in memory, per replica). If the channel still refuses, the
next call holds it again.

All of it happens in :meth:`CredentialsGuard.observe`, called for every
channel call's outcome (``FlowService.timed_call``: orders, polls, closes).
Not thread-safe; the gateway calls it from its event loop.
"""

from __future__ import annotations

import logging

from channels.contract import Outcome, OutcomeStatus
from gateway import metrics
from routing.engine import ChannelState, Router

log = logging.getLogger(__name__)


def credentials_accepted(outcome: Outcome) -> bool:
    """True for an answer only a channel that accepted our credentials gives."""
    if outcome.credentials_rejected:
        return False
    if outcome.status is OutcomeStatus.SUCCEEDED or outcome.not_found:
        return True
    # a definite failure that is not "refused before processing" was processed (CONNECTION_FAILED is safe elsewhere)
    return outcome.status is OutcomeStatus.FAILED and not outcome.safe_elsewhere


class CredentialsGuard:
    """Holds channels out of routing while they refuse our credentials. See the module docstring."""

    def __init__(self, router: Router) -> None:
        self._router = router
        self._held: dict[str, ChannelState] = {}  # channel -> its state before the hold

    def held(self) -> frozenset[str]:
        return frozenset(self._held)

    def observe(self, channel_id: str, outcome: Outcome) -> None:
        if outcome.credentials_rejected:
            self._hold(channel_id, outcome)
        elif channel_id in self._held and credentials_accepted(outcome):
            self.release(channel_id, "a call was accepted")

    def release(self, channel_id: str, why: str, *, restore: bool = True) -> None:
        """End the hold (no-op when there is none).

        ``restore``: put back the state the channel had before the hold. An
        operator setting the state passes False: their state is the one that stands.
        """
        before = self._held.pop(channel_id, None)
        if before is None:
            return
        if restore:
            self._router.set_state(channel_id, before)
        log.warning(
            "credentials hold on the channel ended (%s) / 渠道凭证拦截已解除（%s）",
            why,
            why,
            extra={"channel": channel_id},
        )

    def _hold(self, channel_id: str, outcome: Outcome) -> None:
        metrics.CHANNEL_CREDENTIALS_REJECTED.labels(channel=channel_id).inc()
        state = self._state(channel_id)
        if state is None:
            return  # not a routed channel (removed from configuration)
        if state is not ChannelState.DISABLED:
            self._held[channel_id] = state
            self._router.set_state(channel_id, ChannelState.DISABLED)
        log.error(
            "channel refused paygate's credentials (%s %s): no new flows go to it until a call is accepted or an"
            " operator sets its state / 渠道拒绝了我方凭证（签名、密钥、应用或商户号），在恢复前不再路由到该渠道",
            outcome.raw_code,
            outcome.raw_message[:200],
            extra={"channel": channel_id, "code": outcome.raw_code},
        )

    def _state(self, channel_id: str) -> ChannelState | None:
        try:
            return self._router.state(channel_id)
        except KeyError:
            return None
