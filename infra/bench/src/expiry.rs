//! The expiry step's cost for a subscriber with a month of rows: a paid monthly period
//! (600 credits, due), 300 rows of spending and refunds, then the sweeper's step for that
//! user (index read, `BatchGetItem`, the ledger `Query`, the `TransactWriteItems`), counted
//! and timed; then a second month from the checkpoint the first left, beside a replay of
//! the whole ledger (what the step would cost without the checkpoint).

use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use shared::aws::dynamo::BalanceChange;
use shared::aws::dynamo::payments::EventOutcome;
use shared::domain::ledger::LedgerReason;
use shared::domain::{Credits, UserId};
use shared::payments::{Effect, PaidBy, Payer, PaymentEvent, PeriodPaid, Provider};
use time::OffsetDateTime;

use crate::stack::Stack;

/// Rows a heavy month writes: 280 charges of 2 credits, 20 of them refunded.
const CHARGES: usize = 280;
const REFUNDS: usize = 20;

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub what: String,
    pub rows_read: usize,
    pub calls: usize,
    pub expired_credits: i64,
    /// Median over the samples.
    pub ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExpiryCost {
    pub samples: usize,
    pub steps: Vec<Step>,
    /// `GET /v1/me` for a subscriber (the replay's read added).
    pub me_calls: usize,
}

async fn month(stack: &Stack, user: UserId, month: i64, period_end: i64) -> anyhow::Result<()> {
    let event = PaymentEvent {
        provider: Provider::Stripe,
        id: format!("evt_bench_{user}_{month}"),
        event_type: "invoice.paid".into(),
        occurred_at_ms: period_end * 1000,
        effect: Effect::PeriodPaid(PeriodPaid {
            payer: Payer {
                user_id: Some(user.to_string()),
                customer_id: None,
            },
            subscription_id: format!("sub_bench_{user}"),
            product_id: "pro_monthly".into(),
            period_start: period_end - 30 * 86_400,
            period_end,
            paid_by: PaidBy::Unknown,
            amount: Some(2999),
        }),
    };
    let outcome = stack.services.store.apply_payment_event(&event).await?;
    anyhow::ensure!(outcome == EventOutcome::Applied, "period: {outcome:?}");
    let two = Credits::new(2)?;
    for n in 0..CHARGES {
        let reference = format!("gen_{month}_{n}");
        let debit = BalanceChange::debit(user, two, LedgerReason::Generation, &reference);
        stack.services.store.apply(&debit).await?;
        if n < REFUNDS {
            let refund = BalanceChange::grant(user, two, LedgerReason::Refund, &reference);
            stack.services.store.apply(&refund).await?;
        }
    }
    Ok(())
}

/// The sweeper's step for `user` alone: its shard of the index read, then the step;
/// counted calls, time, rows read, credits expired.
async fn step(stack: &Stack, user: UserId) -> anyhow::Result<(usize, f64, usize, i64)> {
    let now = OffsetDateTime::now_utc();
    let mut shard = None;
    for s in 0..shared::aws::dynamo::generations::OPEN_SHARDS {
        let found = stack.services.store.due_expiries(s, now).await?;
        if found.iter().any(|d| d.user == user) {
            shard = Some(s);
            break;
        }
    }
    let shard = shard.context("the user's expiry is due")?;
    stack.calls.reset();
    let started = Instant::now();
    let found = stack.services.store.due_expiries(shard, now).await?;
    let due = found
        .into_iter()
        .find(|d| d.user == user)
        .context("still due")?;
    let done = stack.services.store.expire_due(&due, now).await?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    Ok((stack.calls.count(), ms, done.rows_read, done.credits))
}

pub async fn run(samples: usize) -> anyhow::Result<ExpiryCost> {
    let stack = Stack::new("expiry").await?;
    let mut first = Vec::new();
    let mut second = Vec::new();
    let mut whole = Vec::new();
    let mut figures = (0, 0, 0, 0, 0, 0, 0);
    let mut me_calls = 0;
    for sample in 0..samples {
        let (token, user) = stack
            .user(&format!("expiry-{sample}@example.com"), 10)
            .await?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        month(&stack, user, 1, now - 1).await?;
        let (calls, ms, rows, credits) = step(&stack, user).await?;
        first.push(ms);
        figures.0 = calls;
        figures.1 = rows;
        figures.2 = credits;

        month(&stack, user, 2, now).await?;
        stack.calls.reset();
        let (status, _) = stack.send("GET", "/v1/me", Some(&token), None).await?;
        anyhow::ensure!(status.is_success(), "me: {status}");
        me_calls = stack.calls.count();
        let (calls, ms, rows, credits) = step(&stack, user).await?;
        second.push(ms);
        figures.3 = calls;
        figures.4 = rows;
        figures.5 = credits;

        let started = Instant::now();
        let report = stack
            .services
            .store
            .check_expiries(user, OffsetDateTime::now_utc())
            .await?;
        whole.push(started.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(report.is_clean(), "replay disagrees: {report:?}");
        // Everything before the first expiry, its row, the month since, the second's row.
        figures.6 = figures.1 + 1 + figures.4 + 1;
    }
    let median = crate::stats::median;
    Ok(ExpiryCost {
        samples,
        me_calls,
        steps: vec![
            Step {
                what: "first expiry: no checkpoint, the whole month replayed".into(),
                calls: figures.0,
                rows_read: figures.1,
                expired_credits: figures.2,
                ms: median(&first),
            },
            Step {
                what: "next month: from the checkpoint the first left".into(),
                calls: figures.3,
                rows_read: figures.4,
                expired_credits: figures.5,
                ms: median(&second),
            },
            Step {
                what: "for comparison: replay of the whole two months (reconcile's read)".into(),
                calls: 1,
                rows_read: figures.6,
                expired_credits: 0,
                ms: median(&whole),
            },
        ],
    })
}
