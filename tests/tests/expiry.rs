//! Credits that expire, against the emulator (API.md, "Credits that expire"; invariant 10):
//! a period's credits leave as one `expired` row of what is left, once, whoever races the
//! sweeper; purchased credits stay; a refund after the expiry returns nothing spendable.
//! The invoices of `e2e_tests::payments` are for periods in 2025, so their grants are due.

use std::sync::Arc;

use e2e_tests::payments::*;
use e2e_tests::worker_for;
use serde_json::Value;
use shared::aws::dynamo::{Applied, BalanceChange, StoreError};
use shared::domain::Credits;
use shared::domain::ledger::LedgerReason;
use shared::providers::Providers;

fn credits(n: i64) -> Credits {
    Credits::new(n).unwrap()
}

/// A subscriber: the signup bonus (10), a pack (100) and one monthly period (600, due).
async fn subscriber(test: &str) -> (Pay, i64) {
    let pay = pay_stack(test).await;
    let user = pay.user.clone();
    assert_received(
        &pay.stripe(&stripe_purchase(
            "evt_pack",
            &user,
            "credits_100",
            "pi_pack",
            "cus_e",
            999,
        ))
        .await,
    );
    let period = paid_period(&user, "sub_e", "cus_e", 0);
    assert_received(&pay.stripe(&period.event("evt_p0", "invoice.paid")).await);
    let period_end = period.period_start() + 30 * DAY;
    assert_eq!(pay.balance().await, 710);
    (pay, period_end)
}

fn worker(pay: &Pay) -> Arc<worker::Worker> {
    worker_for(&pay.stack, Providers::new(), |_| {})
}

async fn spend(pay: &Pay, amount: i64, reference: &str) -> Result<Applied, StoreError> {
    let change = BalanceChange::debit(
        pay.user_id(),
        credits(amount),
        LedgerReason::Generation,
        reference,
    );
    pay.stack.services.store.apply(&change).await
}

fn expired_rows(ledger: &[Value]) -> Vec<&Value> {
    ledger.iter().filter(|r| r["reason"] == "expired").collect()
}

async fn assert_reconciled(pay: &Pay) {
    assert_eq!(pay.stored_balance().await, pay.ledger_sum().await);
    let report = pay
        .stack
        .services
        .store
        .check_expiries(pay.user_id(), time::OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
}

#[tokio::test]
async fn a_months_600_credits_with_450_spent_expire_as_one_row_of_150_and_purchases_stay() {
    let (pay, period_end) = subscriber("expiry-month").await;
    for n in 0..9 {
        spend(&pay, 50, &format!("gen_{n}")).await.unwrap();
    }
    let me = pay.me().await;
    assert_eq!(
        me["expiring"],
        serde_json::json!([{"credits": 150, "expires_at": rfc3339(period_end)}])
    );

    let report = worker(&pay).sweep().await;
    let again = worker(&pay).sweep().await;

    assert_eq!((report.expired, again.expired), (1, 0));
    let ledger = pay.stack.ledger(&pay.token).await;
    let expired = expired_rows(&ledger);
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0]["delta"], -150);
    let grant = ledger
        .iter()
        .find(|r| r["reason"] == "subscription")
        .unwrap();
    assert_eq!(expired[0]["ref"], grant["id"]);
    assert_eq!(grant["expires_at"], rfc3339(period_end));
    let pack = ledger.iter().find(|r| r["reason"] == "purchase").unwrap();
    assert_eq!(pack["expires_at"], Value::Null);
    assert_eq!(
        pay.balance().await,
        110,
        "the pack and the bonus are untouched"
    );
    assert_eq!(pay.me().await["expiring"], serde_json::json!([]));
    assert_reconciled(&pay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_debits_racing_two_sweepers_never_overspend_and_expire_once() {
    let (pay, _) = subscriber("expiry-race").await;
    let pay = Arc::new(pay);
    let (first, second) = (worker(&pay), worker(&pay));

    let sweeps = [first, second].map(|w| tokio::spawn(async move { w.sweep().await }));
    let debits: Vec<_> = (0..50)
        .map(|n| {
            let pay = pay.clone();
            tokio::spawn(async move { spend(&pay, 10, &format!("gen_race_{n}")).await })
        })
        .collect();
    let mut accepted = 0;
    for debit in debits {
        match debit.await.unwrap() {
            Ok(Applied::Applied(_)) => accepted += 1,
            Err(StoreError::InsufficientCredits) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let mut expired_by_sweeps = 0;
    for sweep in sweeps {
        expired_by_sweeps += sweep.await.unwrap().expired;
    }

    let ledger = pay.stack.ledger(&pay.token).await;
    let expired = expired_rows(&ledger);
    assert!(expired.len() <= 1, "expired twice: {expired:?}");
    assert_eq!(expired.len(), expired_by_sweeps);
    let expired_credits: i64 = expired.iter().map(|r| -r["delta"].as_i64().unwrap()).sum();
    let balance = pay.balance().await;
    assert!(balance >= 0, "overspent: {balance}");
    assert_eq!(balance, 710 - 10 * accepted - expired_credits);
    assert_reconciled(&pay).await;
}

#[tokio::test]
async fn a_refund_after_the_expiry_returns_nothing_spendable() {
    let (pay, _) = subscriber("expiry-refund").await;
    spend(&pay, 8, "gen_late").await.unwrap();
    let worker = worker(&pay);
    assert_eq!(worker.sweep().await.expired, 1);
    assert_eq!(pay.balance().await, 110);

    // The charge's generation fails after its credits' grant expired: its refund goes
    // back to that grant, which expires it again at the next sweep.
    let refund = BalanceChange::grant(pay.user_id(), credits(8), LedgerReason::Refund, "gen_late");
    pay.stack.services.store.apply(&refund).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let report = worker.sweep().await;

    assert_eq!(report.expired, 1);
    assert_eq!(pay.balance().await, 110, "nothing spendable came back");
    let ledger = pay.stack.ledger(&pay.token).await;
    let deltas: Vec<i64> = expired_rows(&ledger)
        .iter()
        .map(|r| r["delta"].as_i64().unwrap())
        .collect();
    assert_eq!(deltas.len(), 2);
    assert!(deltas.contains(&-592) && deltas.contains(&-8), "{deltas:?}");
    assert_reconciled(&pay).await;
}

#[tokio::test]
async fn user_show_lists_each_grant_with_what_is_left_of_it() {
    let (pay, _) = subscriber("expiry-show").await;
    spend(&pay, 30, "gen_show").await.unwrap();
    assert_eq!(worker(&pay).sweep().await.expired, 1);

    let report = pay
        .admin(settings(&pay.base))
        .user_report(&pay.user)
        .await
        .unwrap()
        .unwrap();

    let left = |reason| {
        report
            .grants
            .iter()
            .find(|g| g.reason == reason)
            .map(|g| (g.granted, g.left, g.expired, g.expires_at.is_some()))
            .unwrap()
    };
    assert_eq!(left(LedgerReason::Subscription), (600, 0, 570, true));
    assert_eq!(left(LedgerReason::Purchase), (100, 100, 0, false));
    assert_eq!(left(LedgerReason::SignupBonus), (10, 10, 0, false));
}
