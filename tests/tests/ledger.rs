//! The credit ledger against DynamoDB (the emulator): the conditions that keep balances
//! exact are DynamoDB's, so they are tested there, not on a fake.

use std::collections::HashSet;

use e2e_tests::stack;
use proptest::prelude::*;
use shared::aws::dynamo::{Applied, BalanceChange, DynamoStore, SignIn, StoreError};
use shared::domain::ledger::LedgerReason;
use shared::domain::user::Profile;
use shared::domain::{Credits, UserId};

async fn user_with_balance(store: &DynamoStore, balance: i64) -> UserId {
    let sign_in = SignIn {
        provider: "test".into(),
        subject: ulid::Ulid::new().to_string(),
        profile: Profile {
            email: None,
            name: "Ledger Test".into(),
            avatar_url: None,
        },
        bonus: balance,
        bonus_limit: None,
        origin: Default::default(),
    };
    store.sign_in(&sign_in).await.expect("sign in").0.id
}

async fn balance(store: &DynamoStore, user: UserId) -> i64 {
    store.get_user(user).await.unwrap().unwrap().credits
}

fn credits(n: i64) -> Credits {
    Credits::new(n).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_debits_of_one_on_a_balance_of_twenty_take_exactly_twenty() {
    let stack = stack("debits", |_| {}).await;
    let store = stack.services.store.clone();
    let user = user_with_balance(&store, 20).await;

    let debits = (0..50).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            let change = BalanceChange::debit(
                user,
                credits(1),
                LedgerReason::Generation,
                format!("gen-{i}"),
            );
            store.apply(&change).await
        })
    });
    let results = futures_join(debits).await;

    let accepted = results
        .iter()
        .filter(|r| matches!(r, Ok(Applied::Applied(_))))
        .count();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(StoreError::InsufficientCredits)))
        .count();
    assert_eq!((accepted, refused), (20, 30), "{results:?}");
    assert_eq!(balance(&store, user).await, 0);
    assert_eq!(store.ledger_sum(user).await.unwrap(), 0);
}

async fn futures_join<T: Send + 'static>(
    handles: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for handle in handles.collect::<Vec<_>>() {
        out.push(handle.await.expect("task"));
    }
    out
}

#[tokio::test]
async fn a_repeated_grant_reference_is_reported_and_changes_nothing() {
    let stack = stack("repeat", |_| {}).await;
    let store = &stack.services.store;
    let user = user_with_balance(store, 0).await;
    let grant = BalanceChange::grant(user, credits(100), LedgerReason::Purchase, "order-1");

    assert!(matches!(store.apply(&grant).await, Ok(Applied::Applied(_))));
    assert_eq!(store.apply(&grant).await.unwrap(), Applied::AlreadyApplied);

    assert_eq!(balance(store, user).await, 100);
    assert_eq!(store.ledger_sum(user).await.unwrap(), 100);
}

#[tokio::test]
async fn a_debit_is_refused_when_the_balance_is_short() {
    let stack = stack("short", |_| {}).await;
    let store = &stack.services.store;
    let user = user_with_balance(store, 3).await;

    let debit = BalanceChange::debit(user, credits(4), LedgerReason::Generation, "gen-1");
    assert!(matches!(
        store.apply(&debit).await,
        Err(StoreError::InsufficientCredits)
    ));

    assert_eq!(balance(store, user).await, 3);
    assert_eq!(store.ledger_sum(user).await.unwrap(), 3);
}

#[derive(Debug, Clone)]
enum Op {
    Grant(i64, u8),
    Debit(i64, u8),
    Refund(i64, u8),
}

fn op() -> impl Strategy<Value = Op> {
    // A small pool of references makes repeats common.
    prop_oneof![
        (1i64..30, 0u8..6).prop_map(|(n, r)| Op::Grant(n, r)),
        (1i64..30, 0u8..6).prop_map(|(n, r)| Op::Debit(n, r)),
        (1i64..30, 0u8..6).prop_map(|(n, r)| Op::Refund(n, r)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn the_balance_equals_the_sum_of_the_ledger_after_every_step(ops in proptest::collection::vec(op(), 1..15)) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let stack = stack("prop", |_| {}).await;
            let store = &stack.services.store;
            let user = user_with_balance(store, 0).await;
            let mut expected = 0i64;
            let mut applied = HashSet::new();
            for op in ops {
                let (change, key) = match op {
                    Op::Grant(n, r) => (BalanceChange::grant(user, credits(n), LedgerReason::Purchase, format!("r{r}")), ("purchase", r)),
                    Op::Debit(n, r) => (BalanceChange::debit(user, credits(n), LedgerReason::Generation, format!("r{r}")), ("generation", r)),
                    Op::Refund(n, r) => (BalanceChange::grant(user, credits(n), LedgerReason::Refund, format!("r{r}")), ("refund", r)),
                };
                let result = store.apply(&change).await;
                if applied.contains(&key) {
                    assert_eq!(result.unwrap(), Applied::AlreadyApplied, "a repeated reference changes nothing");
                } else if expected + change.delta() < 0 {
                    assert!(matches!(result, Err(StoreError::InsufficientCredits)), "{result:?}");
                } else {
                    assert!(matches!(result, Ok(Applied::Applied(_))), "{result:?}");
                    applied.insert(key);
                    expected += change.delta();
                }
                let actual = balance(store, user).await;
                assert_eq!(actual, expected);
                assert!(actual >= 0, "debits never take the balance below zero");
                assert_eq!(store.ledger_sum(user).await.unwrap(), actual);
            }
        });
    }
}
