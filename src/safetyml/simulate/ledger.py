"""The merchant ledger and credit events: a latent stress path drives sales, refunds, chargebacks, missed
repayments and the daily hazard of a credit event, so stress is observable before a default."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from safetyml.contract import CREDIT_EVENT_KINDS, LEDGER_KINDS
from safetyml.simulate.presets import DAY_NS, END, LEDGER_DAYS
from safetyml.simulate.world import CATEGORY_DAILY_SALES, Merchants

HORIZON = 90  # days of the credit label
FUTURE = HORIZON + 1  # days simulated past END so the truth of the last snapshots is defined
BASE_HAZARD = 1.15e-4  # per merchant-day
RAMP_DAYS = 75.0
REPAYMENTS = 8
NEVER = np.iinfo(np.int64).max
KIND_HOUR = {
    "sale": 22,
    "refund": 20,
    "chargeback": 15,
    "payout": 9,
    "advance": 12,
    "repayment": 10,
    "missed_repayment": 11,
}


@dataclass
class CreditSim:
    ledger: pd.DataFrame
    credit_events: pd.DataFrame
    truth: pd.DataFrame  # merchant_default truth
    closed_ns: np.ndarray


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def simulate_credit(m: Merchants, rng: np.random.Generator) -> CreditSim:
    """Daily merchant paths over LEDGER_DAYS ending at END (plus the label horizon after it)."""
    n, days = len(m.id), LEDGER_DAYS + FUTURE
    day0 = END.value - LEDGER_DAYS * DAY_NS
    onboard_day = np.floor((m.onboarded_ns - day0) / DAY_NS).astype(np.int64) + 1  # first full day
    first = np.maximum(onboard_day, 0)
    d = np.arange(days)[None, :]
    alive = d >= first[:, None]

    deteriorates = rng.random(n) < _sigmoid(-1.3 - 0.9 * m.quality + 0.4 * m.fraud)
    onset = first + (rng.random(n) * (days - first)).astype(np.int64)
    stress = np.where(deteriorates[:, None], np.clip((d - onset[:, None]) / RAMP_DAYS, 0.0, 1.5), 0.0)
    hazard = BASE_HAZARD * np.exp(-0.5 * m.quality + 0.35 * m.fraud)[:, None] * np.exp(3.0 * stress) * alive
    cum = np.cumsum(hazard, axis=1)
    threshold = rng.exponential(1.0, n)
    crossed = cum >= threshold[:, None]
    has_event = crossed.any(axis=1)
    event_day = np.where(has_event, crossed.argmax(axis=1), NEVER)
    event_ns = day0 + np.minimum(event_day, days) * DAY_NS + (rng.random(n) * DAY_NS).astype(np.int64)
    event_ns -= event_ns % 10**9
    observed = has_event & (event_day < LEDGER_DAYS)
    closed_ns = np.where(observed, event_ns, NEVER)
    trading = alive[:, :LEDGER_DAYS] & (d[:, :LEDGER_DAYS] < np.minimum(event_day, LEDGER_DAYS)[:, None])
    s = stress[:, :LEDGER_DAYS]

    # --- daily amounts (merchant x day matrices)
    base = np.exp(CATEGORY_DAILY_SALES[m.category] + 0.5 * rng.standard_normal(n))
    ticket = np.exp(m.value_mu)
    dow = (pd.Timestamp(day0, tz="UTC").dayofweek + np.arange(LEDGER_DAYS)) % 7
    weekly = np.array([0.9, 0.9, 0.95, 1.0, 1.15, 1.25, 1.1])[dow][None, :]
    sales = base[:, None] * weekly * np.exp(-0.8 * s) * rng.lognormal(0.0, 0.25, (n, LEDGER_DAYS))
    orders = sales / ticket[:, None]
    refund_n = rng.poisson(0.004 * orders * (1 + 2.0 * s))
    cb_rate = 0.0015 * orders * (1 + 3.0 * s + np.maximum(m.fraud, 0)[:, None])
    cb_n = rng.poisson(cb_rate)
    refunds = refund_n * ticket[:, None] * rng.uniform(0.5, 1.5, (n, LEDGER_DAYS))
    chargebacks = cb_n * ticket[:, None] * rng.uniform(0.8, 2.0, (n, LEDGER_DAYS))
    net = np.where(trading, sales - refunds - chargebacks, 0.0)
    csum = np.concatenate([np.zeros((n, 1)), np.cumsum(net, axis=1)], axis=1)
    week_net = csum[:, 7:] - csum[:, :-7]  # net of days [j-7, j) for payout on day j (j >= 7)
    payout_day = (dow == 0) & (np.arange(LEDGER_DAYS) >= 7)

    rows_m, rows_d, rows_k, rows_a = [], [], [], []

    def emit(mask: np.ndarray, amount: np.ndarray, kind: str) -> None:
        mi, di = np.nonzero(mask)
        rows_m.append(mi)
        rows_d.append(di)
        rows_k.append(np.full(len(mi), LEDGER_KINDS.index(kind), dtype=np.int8))
        rows_a.append(amount[mi, di] if amount.ndim == 2 else amount)

    emit(trading & (sales > 0), sales, "sale")
    emit(trading & (refund_n > 0), refunds, "refund")
    emit(trading & (cb_n > 0), chargebacks, "chargeback")
    payouts = np.zeros((n, LEDGER_DAYS))
    payouts[:, 7:] = np.maximum(week_net[:, : LEDGER_DAYS - 7], 0.0)
    emit(trading & payout_day[None, :] & (payouts > 0), payouts, "payout")

    # --- cash advances with weekly scheduled repayments; stressed merchants take more and miss more
    adv_mask = trading & (rng.random((n, LEDGER_DAYS)) < (1 / 200) * (1 + 2.0 * s))
    am, ad = np.nonzero(adv_mask)
    adv_amount = np.round(20 * base[am] * rng.uniform(0.7, 1.3, len(am)), 2)
    emit(adv_mask, np.zeros_like(sales), "advance")
    rows_a[-1] = adv_amount
    k = np.arange(1, REPAYMENTS + 1)
    rm = np.repeat(am, REPAYMENTS)
    rd = (ad[:, None] + 7 * k[None, :]).ravel()
    due = np.repeat(np.round(adv_amount * 1.08 / REPAYMENTS, 2), REPAYMENTS)
    keep = rd < LEDGER_DAYS
    rm, rd, due = rm[keep], rd[keep], due[keep]
    keep = trading[rm, rd]
    rm, rd, due = rm[keep], rd[keep], due[keep]
    missed = rng.random(len(rm)) < _sigmoid(-3.2 + 3.5 * s[rm, rd] - 0.5 * m.quality[rm])
    for kind, sel in (("repayment", ~missed), ("missed_repayment", missed)):
        rows_m.append(rm[sel])
        rows_d.append(rd[sel])
        rows_k.append(np.full(int(sel.sum()), LEDGER_KINDS.index(kind), dtype=np.int8))
        rows_a.append(due[sel])

    mi = np.concatenate(rows_m)
    di = np.concatenate(rows_d)
    ki = np.concatenate(rows_k)
    amount = np.round(np.concatenate(rows_a), 2)
    hours = np.array([KIND_HOUR[k] for k in LEDGER_KINDS])[ki]
    event_at = day0 + di * DAY_NS + hours * 3_600 * 10**9
    order = np.lexsort((ki, mi, event_at))
    ledger = pd.DataFrame(
        {
            "merchant_id": pd.array(m.id[mi[order]], dtype="str"),
            "event_at": pd.to_datetime(event_at[order], utc=True).astype("datetime64[ns, UTC]"),
            "kind": pd.array(np.array(LEDGER_KINDS, dtype=object)[ki[order]], dtype="str"),
            "amount": amount[order],
        }
    )

    # --- credit events and their kinds
    ev = np.flatnonzero(observed)
    had_advance = np.zeros(n, dtype=bool)
    had_advance[am] = True
    weights = np.column_stack(
        [
            1.5 * had_advance[ev] + 0.2,  # advance_default
            np.ones(len(ev)),  # chargeback_loss
            np.exp(m.fraud[ev] - 1.0),  # fraud_closure
        ]
    )
    cum_w = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
    kind = (rng.random(len(ev))[:, None] > cum_w).sum(axis=1).clip(0, 2)
    order = np.argsort(event_ns[ev], kind="stable")
    events = pd.DataFrame(
        {
            "merchant_id": pd.array(m.id[ev[order]], dtype="str"),
            "event_at": pd.to_datetime(event_ns[ev[order]], utc=True).astype("datetime64[ns, UTC]"),
            "kind": pd.array(np.array(CREDIT_EVENT_KINDS, dtype=object)[kind[order]], dtype="str"),
        }
    )

    # --- truth at month-end snapshots (as_of = month end + 1 day, 00:00 UTC)
    month_ends = pd.date_range(pd.Timestamp(day0, tz="UTC"), END - pd.Timedelta(days=1), freq="ME")
    as_of = month_ends.normalize() + pd.Timedelta(days=1)
    cum0 = np.concatenate([np.zeros((n, 1)), cum], axis=1)  # cum0[:, j] = hazard of days < j
    frames = []
    for ts in as_of:
        a = int((ts.value - day0) // DAY_NS)
        at_risk = (m.onboarded_ns < ts.value) & (event_ns >= ts.value)
        idx = np.flatnonzero(at_risk)
        p30 = 1 - np.exp(-(cum0[idx, a + 30] - cum0[idx, a]))
        p90 = 1 - np.exp(-(cum0[idx, a + HORIZON] - cum0[idx, a]))
        frames.append(
            pd.DataFrame(
                {
                    "merchant_id": pd.array(m.id[idx], dtype="str"),
                    "as_of": pd.Series(np.full(len(idx), ts.value)),
                    "p_default_monthly": p30,
                    "p_default_90d": p90,
                }
            )
        )
    truth = pd.concat(frames, ignore_index=True)
    truth["as_of"] = pd.to_datetime(truth["as_of"].to_numpy(), utc=True).astype("datetime64[ns, UTC]")
    return CreditSim(ledger, events, truth, closed_ns)
