//! Property tests of the pure payment rules (`shared::payments::rules`), run against an
//! in-memory store that reads and writes what the DynamoDB adapter does (the keys
//! `rules::wanted` names, the effects `rules::decide` returns). The emulator tests check
//! the conditions and races; these check that the rules themselves make every order of
//! delivery end the same.
//!
//! One subscription's life (created, periods paid, their payments linked, refunds,
//! disputes opened, won, lost, an inquiry closed, canceled, deleted) and one pack's (bought,
//! refunded twice, disputed), delivered in any order with any duplicates, end in the same
//! balance and ledger as delivered once in order; no period is granted twice; no payment
//! gives back more than it granted.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use proptest::prelude::*;
use shared::domain::UserId;
use shared::domain::ledger::LedgerReason;
use shared::payments::rules::{
    self, Account, Decision, InvoiceLink, Order, PeriodGrant, Shown, State, Subscription,
};
use shared::payments::{
    Dispute, DisputeStage, Effect, InvoicePayment, PaidBy, Payer, PaymentEvent, PeriodPaid,
    Provider, Purchase, Refund, Refunded, SubscriptionState,
};

const DAY: i64 = 86_400;
const T0: i64 = 1_760_000_000;
const YEAR_PRICE: i64 = 29_999;

/// What the in-memory store holds for one user.
#[derive(Debug, Default, Clone, PartialEq)]
struct Store {
    events: BTreeSet<String>,
    orders: BTreeMap<String, Order>,
    periods: BTreeMap<(String, i64), PeriodGrant>,
    invoices: BTreeMap<String, InvoiceLink>,
    subscription: Option<Subscription>,
    shown: Option<String>,
    balance: i64,
    ledger: Vec<(LedgerReason, String, i64)>,
}

impl Store {
    fn read(&self, event: &PaymentEvent, user: UserId) -> State {
        let wanted = rules::wanted(event);
        let invoice = wanted.invoice.and_then(|i| self.invoices.get(i)).cloned();
        let payment = wanted
            .payment
            .map(str::to_string)
            .or_else(|| rules::linked_payment(event, invoice.as_ref()).map(str::to_string));
        State {
            recorded: self.events.contains(&event.id),
            account: wanted.payer.map(|_| Account {
                user_id: user,
                deleted: false,
            }),
            order: payment.and_then(|p| self.orders.get(&p)).cloned(),
            period: wanted
                .period
                .and_then(|(s, start)| self.periods.get(&(s.to_string(), start)))
                .cloned(),
            invoice,
            subscription: wanted.subscription.and(self.subscription.clone()),
            shown: Shown {
                key: self.shown.clone(),
                active: self
                    .subscription
                    .as_ref()
                    .is_some_and(|s| shared::domain::payment::is_active_status(&s.status)),
            },
            mapped_to: Some(user),
            deleted: BTreeSet::new(),
        }
    }

    fn deliver(&mut self, event: &PaymentEvent, user: UserId) {
        let state = self.read(event, user);
        match rules::decide(event, &state, T0) {
            Decision::Apply(effects) => {
                assert!(self.events.insert(event.id.clone()), "applied twice");
                for change in &effects.credits {
                    assert_ne!(change.delta, 0);
                    self.balance += change.delta;
                    self.ledger
                        .push((change.reason, change.reference.clone(), change.delta));
                }
                if let Some(order) = effects.order {
                    self.orders.insert(order.payment_id.clone(), order);
                }
                if let Some(period) = effects.period {
                    let key = (period.subscription_id.clone(), period.period_start);
                    assert!(
                        self.periods.insert(key, period).is_none(),
                        "a period granted twice"
                    );
                }
                if let Some(link) = effects.invoice {
                    self.invoices.insert(link.invoice_id.clone(), link);
                }
                if let Some(subscription) = effects.subscription {
                    self.subscription = Some(subscription);
                }
                if let Some(show) = effects.show {
                    self.shown = Some(show.key);
                }
            }
            Decision::Duplicate | Decision::Ignore(_) => {}
            other => panic!("{} decided {other:?}", event.id),
        }
    }

    /// The ledger as what each reference moved in all.
    fn net_by_reference(&self) -> BTreeMap<String, i64> {
        let mut net = BTreeMap::new();
        for (_, reference, delta) in &self.ledger {
            *net.entry(reference.clone()).or_default() += delta;
        }
        net.retain(|_, delta| *delta != 0);
        net
    }
}

fn event(provider: Provider, id: &str, at: i64, effect: Effect) -> PaymentEvent {
    PaymentEvent {
        provider,
        id: id.to_string(),
        event_type: "test".into(),
        occurred_at_ms: at * 1000,
        effect,
    }
}

fn payer(user: UserId) -> Payer {
    Payer {
        user_id: Some(user.to_string()),
        customer_id: Some("cus_1".into()),
    }
}

/// How a scenario's payments end.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Won,
    Lost,
    InquiryClosed,
    Refunded { first_pct: i64, second_pct: i64 },
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        Just(Outcome::Won),
        Just(Outcome::Lost),
        Just(Outcome::InquiryClosed),
        (0..=100i64, 0..=100i64).prop_map(|(a, b)| Outcome::Refunded {
            first_pct: a.min(b),
            second_pct: a.max(b),
        }),
    ]
}

fn dispute(payment: &str, stage: DisputeStage, amount: i64) -> Effect {
    Effect::Dispute(Dispute {
        payment_id: payment.to_string(),
        dispute_id: format!("dp_{payment}"),
        amount,
        payment_amount: None,
        stage,
    })
}

/// The events of what happens to one payment after it is made.
fn afterwards(
    provider: Provider,
    payment: &str,
    amount: i64,
    outcome: Outcome,
    at: i64,
) -> Vec<PaymentEvent> {
    let id = |what: &str| format!("evt_{payment}_{what}");
    match outcome {
        Outcome::Won => vec![
            event(
                provider,
                &id("dispute_created"),
                at,
                dispute(payment, DisputeStage::Chargeback, amount),
            ),
            event(
                provider,
                &id("funds_withdrawn"),
                at + 1,
                dispute(payment, DisputeStage::Chargeback, amount),
            ),
            event(
                provider,
                &id("funds_reinstated"),
                at + 2,
                dispute(payment, DisputeStage::Won, amount),
            ),
            event(
                provider,
                &id("dispute_closed"),
                at + 3,
                dispute(payment, DisputeStage::Won, amount),
            ),
        ],
        Outcome::Lost => vec![
            event(
                provider,
                &id("inquiry"),
                at,
                dispute(payment, DisputeStage::Inquiry, amount),
            ),
            event(
                provider,
                &id("escalated"),
                at + 1,
                dispute(payment, DisputeStage::Chargeback, amount),
            ),
            event(
                provider,
                &id("dispute_closed"),
                at + 2,
                dispute(payment, DisputeStage::Lost, amount),
            ),
        ],
        Outcome::InquiryClosed => vec![
            event(
                provider,
                &id("inquiry"),
                at,
                dispute(payment, DisputeStage::Inquiry, amount),
            ),
            event(
                provider,
                &id("inquiry_review"),
                at + 1,
                dispute(payment, DisputeStage::Inquiry, amount),
            ),
            event(
                provider,
                &id("inquiry_closed"),
                at + 2,
                dispute(payment, DisputeStage::ClosedWithoutLoss, amount),
            ),
        ],
        Outcome::Refunded {
            first_pct,
            second_pct,
        } => {
            let refunded = |pct: i64| match provider {
                Provider::Stripe => Refunded::Cumulative {
                    total: amount * pct / 100,
                },
                Provider::Creem => Refunded::Single {
                    refund_id: format!("ref_{pct}"),
                    amount: amount * pct / 100,
                },
            };
            let refund = |pct: i64| {
                Effect::Refund(Refund {
                    payment_id: payment.to_string(),
                    refunded: refunded(pct),
                    payment_amount: Some(amount),
                })
            };
            vec![
                event(provider, &id("refund_1"), at, refund(first_pct)),
                event(provider, &id("refund_2"), at + 1, refund(second_pct)),
            ]
        }
    }
}

/// One yearly subscription through Stripe: created, two paid periods whose invoices and
/// payments arrive as separate events (plus `invoice.payment_succeeded` repeating one),
/// what becomes of each payment, a cancel at period end, the end.
fn stripe_subscription(user: UserId, first: Outcome, second: Outcome) -> Vec<PaymentEvent> {
    let p = Provider::Stripe;
    let status = |status: &str, cancel: bool| {
        Effect::SubscriptionChanged(SubscriptionState {
            payer: payer(user),
            subscription_id: "sub_1".into(),
            product_id: Some("pro_yearly".into()),
            status: status.into(),
            current_period_end: Some(T0 + 365 * DAY),
            cancel_at_period_end: cancel,
        })
    };
    let period = |n: i64| {
        Effect::PeriodPaid(PeriodPaid {
            payer: payer(user),
            subscription_id: "sub_1".into(),
            product_id: "pro_yearly".into(),
            period_start: T0 + n * 365 * DAY,
            period_end: T0 + (n + 1) * 365 * DAY,
            paid_by: PaidBy::Invoice {
                invoice_id: format!("in_{n}"),
            },
            amount: Some(YEAR_PRICE),
        })
    };
    let paid = |n: i64| {
        Effect::InvoicePayment(InvoicePayment {
            invoice_id: format!("in_{n}"),
            payment_id: format!("pi_{n}"),
            amount: Some(YEAR_PRICE),
        })
    };
    let year = 365 * DAY;
    let mut events = vec![
        event(p, "evt_created", T0, status("incomplete", false)),
        event(p, "evt_activated", T0, status("active", false)),
        event(p, "evt_invoice_0", T0 + 1, period(0)),
        event(p, "evt_invoice_0_succeeded", T0 + 1, period(0)),
        event(p, "evt_payment_0", T0 + 1, paid(0)),
        event(p, "evt_invoice_1", T0 + year, period(1)),
        event(p, "evt_payment_1", T0 + year, paid(1)),
    ];
    events.extend(afterwards(p, "pi_0", YEAR_PRICE, first, T0 + 100));
    events.extend(afterwards(p, "pi_1", YEAR_PRICE, second, T0 + year + 100));
    events.push(event(
        p,
        "evt_cancel",
        T0 + year + 200,
        status("active", true),
    ));
    events.push(event(
        p,
        "evt_deleted",
        T0 + 2 * year,
        status("canceled", false),
    ));
    events
}

/// One monthly subscription through Creem: each `subscription.paid` names the transaction
/// that refunds and disputes carry.
fn creem_subscription(user: UserId, first: Outcome, second: Outcome) -> Vec<PaymentEvent> {
    let p = Provider::Creem;
    let month = 30 * DAY;
    let period = |n: i64| {
        Effect::PeriodPaid(PeriodPaid {
            payer: payer(user),
            subscription_id: "sub_c".into(),
            product_id: "pro_monthly".into(),
            period_start: T0 + n * month,
            period_end: T0 + (n + 1) * month,
            paid_by: PaidBy::Payment {
                payment_id: format!("tran_{n}"),
            },
            amount: Some(2999),
        })
    };
    let mut events = vec![
        event(p, "evt_c_paid_0", T0, period(0)),
        event(p, "evt_c_paid_0_again", T0 + 5, period(0)),
        event(p, "evt_c_paid_1", T0 + month, period(1)),
    ];
    events.extend(afterwards(p, "tran_0", 2999, first, T0 + 100));
    events.extend(afterwards(p, "tran_1", 2999, second, T0 + month + 100));
    events.push(event(
        p,
        "evt_c_canceled",
        T0 + 2 * month,
        Effect::SubscriptionChanged(SubscriptionState {
            payer: payer(user),
            subscription_id: "sub_c".into(),
            product_id: Some("pro_monthly".into()),
            status: "canceled".into(),
            current_period_end: Some(T0 + 2 * month),
            cancel_at_period_end: false,
        }),
    ));
    events
}

/// One pack: bought (the checkout and its async success both report it), then what
/// becomes of its payment.
fn pack(user: UserId, provider: Provider, then: Outcome) -> Vec<PaymentEvent> {
    let purchase = Effect::Purchase(Purchase {
        payer: payer(user),
        payment_id: "pi_pack".into(),
        product_id: "credits_500".into(),
        amount: Some(3999),
        currency: Some("usd".into()),
    });
    let mut events = vec![
        event(provider, "evt_pack", T0, purchase.clone()),
        event(provider, "evt_pack_async", T0 + 1, purchase),
    ];
    events.extend(afterwards(provider, "pi_pack", 3999, then, T0 + 50));
    events
}

fn scenario() -> impl Strategy<Value = (Vec<PaymentEvent>, Vec<usize>, Vec<usize>)> {
    (
        outcome(),
        outcome(),
        outcome(),
        outcome(),
        outcome(),
        any::<bool>(),
    )
        .prop_flat_map(|(a, b, c, d, e, stripe_pack)| {
            let user = UserId::parse("usr_01HZZZZZZZZZZZZZZZZZZZZZZZ").expect("a user id");
            let mut events = stripe_subscription(user, a, b);
            events.extend(creem_subscription(user, c, d));
            let provider = if stripe_pack {
                Provider::Stripe
            } else {
                Provider::Creem
            };
            events.extend(pack(user, provider, e));
            let n = events.len();
            let order: Vec<usize> = (0..n).collect();
            (
                Just(events),
                Just(order).prop_shuffle(),
                proptest::collection::vec(0..n, 0..n),
            )
        })
}

fn run(events: &[PaymentEvent], order: impl IntoIterator<Item = usize>) -> Store {
    let user = UserId::parse("usr_01HZZZZZZZZZZZZZZZZZZZZZZZ").expect("a user id");
    let mut store = Store::default();
    for i in order {
        store.deliver(&events[i], user);
    }
    store
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn any_interleaving_and_duplication_ends_as_the_events_applied_once_in_order(
        (events, shuffled, duplicates) in scenario()
    ) {
        let in_order = run(&events, 0..events.len());
        let mut delivered = shuffled.clone();
        for (k, &i) in duplicates.iter().enumerate() {
            delivered.insert((k * 7) % (delivered.len() + 1), i);
        }
        let any_order = run(&events, delivered);

        prop_assert_eq!(any_order.balance, in_order.balance);
        prop_assert_eq!(any_order.net_by_reference(), in_order.net_by_reference());
        prop_assert_eq!(&any_order.orders, &in_order.orders);
        // Which of an invoice's repeated events granted a period does not matter.
        let granted = |store: &Store| -> Vec<((String, i64), UserId, i64)> {
            store.periods.iter().map(|(k, g)| (k.clone(), g.user_id, g.credits)).collect()
        };
        prop_assert_eq!(granted(&any_order), granted(&in_order));
        prop_assert_eq!(
            any_order.subscription.as_ref().map(|s| (&s.status, s.cancel_at_period_end)),
            in_order.subscription.as_ref().map(|s| (&s.status, s.cancel_at_period_end))
        );
        prop_assert_eq!(any_order.balance, any_order.ledger.iter().map(|r| r.2).sum::<i64>());
    }

    #[test]
    fn no_period_is_granted_twice_and_no_payment_takes_back_more_than_it_granted(
        (events, shuffled, duplicates) in scenario()
    ) {
        let mut delivered = shuffled.clone();
        delivered.extend(duplicates);
        let store = run(&events, delivered);

        let mut grants: HashMap<&str, usize> = HashMap::new();
        for (reason, reference, _) in &store.ledger {
            if *reason == LedgerReason::Subscription {
                *grants.entry(reference.as_str()).or_default() += 1;
            }
        }
        prop_assert!(grants.values().all(|n| *n == 1), "{grants:?}");
        prop_assert_eq!(grants.len(), 4, "two Stripe and two Creem periods");
        let net = store.net_by_reference();
        for order in store.orders.values() {
            let granted = order.grant.as_ref().map_or(0, |g| g.credits);
            prop_assert!(order.clawed >= 0 && order.clawed <= granted, "{order:?}");
            // What the payment's own rows moved: its claw-backs and give-backs (and, for a
            // pack, its grant, which has the payment as its reference).
            let own_grant = order
                .grant
                .as_ref()
                .filter(|g| g.reference == order.payment_id)
                .map_or(0, |g| g.credits);
            let moved = net.get(&order.payment_id).copied().unwrap_or(0);
            prop_assert_eq!(moved, own_grant - order.clawed, "{:?}", order);
        }
    }
}

#[test]
fn a_yearly_periods_chargeback_before_its_invoice_is_linked_takes_its_7200_credits_when_it_is() {
    let user = UserId::new();
    let events = stripe_subscription(user, Outcome::Lost, Outcome::InquiryClosed);
    let find = |id: &str| events.iter().position(|e| e.id == id).expect(id);
    let first_events = [
        find("evt_pi_0_inquiry"),
        find("evt_pi_0_escalated"),
        find("evt_pi_0_dispute_closed"),
        find("evt_invoice_0"),
    ];
    let mut store = Store::default();
    for i in first_events {
        store.deliver(&events[i], user);
    }
    assert_eq!(
        store.balance, 7200,
        "granted; the dispute is not tied to it yet"
    );

    store.deliver(&events[find("evt_payment_0")], user);

    assert_eq!(store.balance, 0);
    assert_eq!(store.orders["pi_0"].clawed, 7200);
}
