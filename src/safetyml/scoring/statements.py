"""Statements of reasons: what a rider or merchant is told about a decision, in their market's language.

Built from the decision record and the ``statement`` templates of the market's policy file (falling back
to ``default.yaml``'s): the action in plain words, at most four specific principal reasons taken from the
decision's reason codes (adverse-action practice; the EU DSA's statement of reasons), and how to appeal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from safetyml.errors import SafetymlError
from safetyml.scoring.policies import DEFAULT_MARKET, MAX_PRINCIPAL_REASONS

if TYPE_CHECKING:
    from safetyml.scoring.policies import PolicySet, Statement


class StatementError(SafetymlError, LookupError):
    """No statement templates for the decision's market (nor in default.yaml)."""


@dataclass(frozen=True)
class StatementOfReasons:
    """The rendered statement: language, heading, action sentence, principal reasons, appeal instructions."""

    language: str
    heading: str
    action: str
    reasons_intro: str
    reasons: list[str]
    appeal: str

    def render(self) -> str:
        lines = [self.heading, "", self.action]
        if self.reasons:
            lines += ["", self.reasons_intro, *(f"  {i}. {text}" for i, text in enumerate(self.reasons, 1))]
        return "\n".join([*lines, "", self.appeal])


def templates_for(market: str | None, policies: PolicySet) -> Statement:
    """The statement templates of ``market``'s policy, else default.yaml's."""
    for policy in (policies.for_market(market), policies.for_market(DEFAULT_MARKET)):
        if policy.statement is not None:
            return policy.statement
    raise StatementError(
        f"no `statement` section in the policy of market {market!r} nor in default.yaml; add one "
        "(see docs/appeals.md)"
    )


def principal_reasons(reasons: list[dict[str, Any]], templates: Statement) -> list[str]:
    """Up to four distinct phrases for the reasons that pushed the score up, strongest first."""
    up = [r for r in reasons if r.get("direction", "up") == "up"]
    up.sort(key=lambda r: -float(r.get("contribution_logodds") or 0.0))
    phrases: list[str] = []
    for reason in up:
        text = templates.reason_text(reason)
        if text not in phrases:
            phrases.append(text)
        if len(phrases) == MAX_PRINCIPAL_REASONS:
            break
    return phrases


def statement_of_reasons(decision: dict[str, Any], policies: PolicySet | None = None) -> StatementOfReasons:
    """The statement for a decision record (as :func:`safetyml.scoring.audit.get_decision` returns it)."""
    from safetyml.scoring.policies import load_policies
    from safetyml.values import utc_timestamp

    policies = policies if policies is not None else load_policies()
    templates = templates_for(decision.get("market"), policies)
    decided = utc_timestamp(decision["decided_at"]).strftime("%Y-%m-%d %H:%M UTC")
    fields = {"decision_id": decision["decision_id"], "decided_at": decided, "days": templates.appeal_days}
    return StatementOfReasons(
        language=templates.language,
        heading=templates.heading.format(**fields),
        action=templates.actions[decision["task"]][decision["action"]],
        reasons_intro=templates.reasons_intro,
        reasons=principal_reasons(decision.get("reasons") or [], templates),
        appeal=" ".join(templates.appeal.format(**fields).split()),
    )
