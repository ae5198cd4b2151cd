//! Payments (`webhook`), subscriptions: periods granted once whatever the order, status
//! news applied only when newer, and a period's payment tied to it so that its refunds and
//! disputes claw back (Stripe basil: `invoice_payment.paid`; Creem: the transaction of
//! `subscription.paid`). Events in the providers' documented shapes (`tests/fixtures`).

use e2e_tests::payments::*;
use serde_json::{Value, json};

// ---------------------------------------------------------------- subscriptions

#[tokio::test]
async fn a_renewal_reported_by_both_invoice_paid_and_invoice_payment_succeeded_grants_once() {
    let pay = pay_stack("pay-renewal-twice").await;
    let user = pay.user.clone();

    assert_received(
        &pay.stripe(&paid_period(&user, "sub_1", "cus_s", 0).event("evt_p0", "invoice.paid"))
            .await,
    );
    let renewal = paid_period(&user, "sub_1", "cus_s", 1);
    assert_received(
        &pay.stripe(&renewal.event("evt_p1_paid", "invoice.paid"))
            .await,
    );
    assert_received(
        &pay.stripe(&renewal.event("evt_p1_succeeded", "invoice.payment_succeeded"))
            .await,
    );

    assert_eq!(pay.balance().await, 10 + 600 + 600);
    let grants = pay
        .stack
        .ledger(&pay.token)
        .await
        .into_iter()
        .filter(|row| row["reason"] == "subscription")
        .count();
    assert_eq!(grants, 2);
}

#[tokio::test]
async fn a_zero_dollar_invoice_and_a_proration_invoice_grant_nothing() {
    let pay = pay_stack("pay-zero").await;
    let user = pay.user.clone();
    let trial = Invoice {
        amount_paid: 0,
        ..paid_period(&user, "sub_trial", "cus_t", 0)
    };
    let proration = Invoice {
        reason: "subscription_update",
        amount_paid: 1500,
        proration: true,
        ..paid_period(&user, "sub_trial", "cus_t", 1)
    };
    let proration_on_a_cycle = Invoice {
        proration: true,
        ..paid_period(&user, "sub_trial", "cus_t", 2)
    };

    assert_received(&pay.stripe(&trial.event("evt_trial", "invoice.paid")).await);
    assert_received(
        &pay.stripe(&proration.event("evt_prorate", "invoice.paid"))
            .await,
    );
    assert_received(
        &pay.stripe(&proration_on_a_cycle.event("evt_prorate2", "invoice.paid"))
            .await,
    );

    assert_eq!(pay.balance().await, 10);
}

#[tokio::test]
async fn a_renewal_before_its_checkout_completion_grants_each_period_once_and_ends_active() {
    let pay = pay_stack("pay-order-renewal").await;
    let user = pay.user.clone();
    let first = paid_period(&user, "sub_o", "cus_o", 0);
    let second = paid_period(&user, "sub_o", "cus_o", 1);

    assert_received(&pay.stripe(&second.event("evt_p1", "invoice.paid")).await);
    assert_received(
        &pay.stripe(&stripe_subscription_checkout(
            "evt_cs", &user, "sub_o", "cus_o", T0,
        ))
        .await,
    );
    assert_received(&pay.stripe(&first.event("evt_p0", "invoice.paid")).await);
    assert_received(
        &pay.stripe(&second.event("evt_p1_again", "invoice.payment_succeeded"))
            .await,
    );

    assert_eq!(pay.balance().await, 10 + 1200);
    let subscription = &pay.me().await["subscription"];
    assert_eq!(subscription["status"], "active");
    assert_eq!(subscription["product_id"], "pro_monthly");
    let period_two_end =
        time::OffsetDateTime::from_unix_timestamp(second.period_start() + 30 * DAY)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
    assert_eq!(subscription["current_period_end"], period_two_end);
}

#[tokio::test]
async fn a_cancellation_before_its_payment_ends_canceled_with_the_paid_period_granted() {
    let pay = pay_stack("pay-order-cancel").await;
    let user = pay.user.clone();
    let period = paid_period(&user, "sub_c", "cus_c", 0);
    let paid_at = period.period_start() + 60;

    let cancel = stripe_subscription(
        "evt_del",
        "customer.subscription.deleted",
        paid_at + 3600,
        &user,
        "sub_c",
        "canceled",
        false,
    );
    assert_received(&pay.stripe(&cancel).await);
    assert_received(&pay.stripe(&period.event("evt_paid", "invoice.paid")).await);

    assert_eq!(pay.balance().await, 610);
    assert_eq!(pay.me().await["subscription"]["status"], "canceled");
}

#[tokio::test]
async fn period_twos_retry_after_period_three_grants_no_period_twice_and_keeps_period_three_current()
 {
    let pay = pay_stack("pay-order-retry").await;
    let user = pay.user.clone();
    let periods: Vec<Invoice> = (0..3)
        .map(|p| paid_period(&user, "sub_r", "cus_r", p))
        .collect();

    for (i, period) in periods.iter().enumerate() {
        assert_received(
            &pay.stripe(&period.event(&format!("evt_{i}"), "invoice.paid"))
                .await,
        );
    }
    assert_received(
        &pay.stripe(&periods[1].event("evt_1_retry", "invoice.payment_succeeded"))
            .await,
    );

    assert_eq!(pay.balance().await, 10 + 3 * 600);
    let subscription = &pay.me().await["subscription"];
    assert_eq!(subscription["status"], "active");
    let period_three_end =
        time::OffsetDateTime::from_unix_timestamp(periods[2].period_start() + 30 * DAY)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
    assert_eq!(subscription["current_period_end"], period_three_end);
}

#[tokio::test]
async fn me_shows_the_current_subscription_and_an_older_status_does_not_replace_a_newer_one() {
    let pay = pay_stack("pay-me-sub").await;
    let user = pay.user.clone();
    assert_eq!(pay.me().await["subscription"], Value::Null);
    let start = paid_period(&user, "sub_m", "cus_m", 0);
    assert_received(&pay.stripe(&start.event("evt_p0", "invoice.paid")).await);

    let cancel_later = stripe_subscription(
        "evt_upd_new",
        "customer.subscription.updated",
        T0 + 2 * DAY,
        &user,
        "sub_m",
        "active",
        true,
    );
    let stale_past_due = stripe_subscription(
        "evt_upd_old",
        "customer.subscription.updated",
        T0 + DAY,
        &user,
        "sub_m",
        "past_due",
        false,
    );
    assert_received(&pay.stripe(&cancel_later).await);
    assert_received(&pay.stripe(&stale_past_due).await);

    let subscription = &pay.me().await["subscription"];
    assert_eq!(subscription["provider"], "stripe");
    assert_eq!(subscription["product_id"], "pro_monthly");
    assert_eq!(subscription["status"], "active");
    assert_eq!(subscription["cancel_at_period_end"], true);
    assert!(subscription["current_period_end"].is_string());
}

#[tokio::test]
async fn a_creem_subscription_is_granted_by_subscription_paid_not_by_its_checkout() {
    let pay = pay_stack("pay-creem-sub").await;
    let user = pay.user.clone();
    let mut checkout = creem_purchase("evt_chk", &user, "ord_sub", "test");
    checkout["object"]["product"]["id"] = json!("prod_pro_monthly");
    checkout["object"]["order"]["product"] = json!("prod_pro_monthly");

    assert_received(&pay.creem(&checkout).await);
    assert_eq!(pay.balance().await, 10);
    let paid_at = (T0 + 60) * 1000;
    assert_received(
        &pay.creem(&creem_subscription(
            "evt_paid",
            "subscription.paid",
            paid_at,
            &user,
            "active",
            0,
        ))
        .await,
    );
    assert_received(
        &pay.creem(&creem_subscription(
            "evt_paid_again",
            "subscription.paid",
            paid_at + 5,
            &user,
            "active",
            0,
        ))
        .await,
    );
    assert_eq!(pay.balance().await, 610);
    assert_received(
        &pay.creem(&creem_subscription(
            "evt_cancel",
            "subscription.canceled",
            paid_at + 1000,
            &user,
            "canceled",
            0,
        ))
        .await,
    );

    let subscription = &pay.me().await["subscription"];
    assert_eq!(subscription["provider"], "creem");
    assert_eq!(subscription["status"], "canceled");
}

// ---------------------------------------------------------------- a period's refunds and disputes

/// A yearly Stripe period granted (7,200 credits) and tied to the PaymentIntent `pi` that
/// paid it, in the order Stripe usually sends them.
async fn yearly_stripe_period(pay: &Pay, pi: &str) -> i64 {
    let year = paid_year(&pay.user, "sub_year", "cus_year", 0);
    assert_received(
        &pay.stripe(&year.event("evt_year_paid", "invoice.paid"))
            .await,
    );
    assert_received(&pay.stripe(&year.payment("evt_year_payment", pi)).await);
    assert_eq!(pay.balance().await, 10 + 7200);
    year.amount_paid
}

fn clawbacks(ledger: &[Value]) -> Vec<i64> {
    ledger
        .iter()
        .filter(|row| row["reason"] == "clawback")
        .map(|row| row["delta"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_disputed_yearly_stripe_payment_claws_back_its_periods_7200_credits_and_a_won_dispute_restores_them()
 {
    let pay = pay_stack("pay-year-dispute").await;
    let paid = yearly_stripe_period(&pay, "pi_year").await;

    let opened = stripe_dispute(
        "evt_dp_open",
        "charge.dispute.created",
        "pi_year",
        paid,
        "needs_response",
    );
    assert_received(&pay.stripe(&opened).await);
    let after_dispute = pay.balance().await;
    let withdrawn = stripe_dispute(
        "evt_dp_funds",
        "charge.dispute.funds_withdrawn",
        "pi_year",
        paid,
        "needs_response",
    );
    assert_received(&pay.stripe(&withdrawn).await);
    let won = stripe_dispute(
        "evt_dp_won",
        "charge.dispute.closed",
        "pi_year",
        paid,
        "won",
    );
    assert_received(&pay.stripe(&won).await);
    let reinstated = stripe_dispute(
        "evt_dp_back",
        "charge.dispute.funds_reinstated",
        "pi_year",
        paid,
        "won",
    );
    assert_received(&pay.stripe(&reinstated).await);

    assert_eq!(after_dispute, 10, "the period's 7,200 credits taken back");
    assert_eq!(pay.balance().await, 10 + 7200, "given back once");
    assert_eq!(clawbacks(&pay.stack.ledger(&pay.token).await), vec![-7200]);
    assert_eq!(pay.ledger_sum().await, 10 + 7200);
}

#[tokio::test]
async fn a_periods_dispute_and_payment_that_arrive_before_its_invoice_take_the_grant_back_in_the_same_write()
 {
    let pay = pay_stack("pay-year-early-dispute").await;
    let year = paid_year(&pay.user, "sub_early", "cus_early", 0);
    let opened = stripe_dispute(
        "evt_dp",
        "charge.dispute.created",
        "pi_early",
        year.amount_paid,
        "needs_response",
    );

    assert_received(&pay.stripe(&opened).await);
    assert_received(&pay.stripe(&year.payment("evt_payment", "pi_early")).await);
    assert_eq!(
        pay.balance().await,
        10,
        "nothing granted yet, nothing taken"
    );
    assert_received(&pay.stripe(&year.event("evt_paid", "invoice.paid")).await);
    let lost = stripe_dispute(
        "evt_lost",
        "charge.dispute.closed",
        "pi_early",
        year.amount_paid,
        "lost",
    );
    assert_received(&pay.stripe(&lost).await);

    assert_eq!(pay.balance().await, 10);
    assert_eq!(clawbacks(&pay.stack.ledger(&pay.token).await), vec![-7200]);
    assert_eq!(pay.ledger_sum().await, 10);
}

#[tokio::test]
async fn a_partial_refund_of_a_yearly_stripe_period_claws_back_its_share() {
    let pay = pay_stack("pay-year-refund").await;
    let paid = yearly_stripe_period(&pay, "pi_year_r").await;
    let refunded = paid / 4;

    assert_received(
        &pay.stripe(&stripe_refund("evt_r", "pi_year_r", paid, refunded))
            .await,
    );

    let share = 7200 * refunded / paid;
    assert_eq!(share, 1799);
    assert_eq!(pay.balance().await, 10 + 7200 - share);
    assert_eq!(pay.ledger_sum().await, 10 + 7200 - share);
}

/// A yearly Creem period granted: `subscription.paid` names the transaction that paid it.
async fn yearly_creem_period(pay: &Pay) -> String {
    let paid = creem_subscription_of(
        "sub_year_c",
        "prod_pro_yearly",
        365,
        "evt_c_year",
        "subscription.paid",
        (T0 + 60) * 1000,
        &pay.user,
        "active",
        0,
    );
    assert_received(&pay.creem(&paid).await);
    assert_eq!(pay.balance().await, 10 + 7200);
    paid["object"]["last_transaction_id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_disputed_yearly_creem_payment_claws_back_its_periods_7200_credits() {
    let pay = pay_stack("pay-year-dispute-creem").await;
    let transaction = yearly_creem_period(&pay).await;

    assert_received(
        &pay.creem(&creem_dispute("evt_c_dp", &transaction, 29_999))
            .await,
    );
    assert_received(
        &pay.creem(&creem_dispute("evt_c_dp", &transaction, 29_999))
            .await,
    );

    assert_eq!(pay.balance().await, 10);
    assert_eq!(clawbacks(&pay.stack.ledger(&pay.token).await), vec![-7200]);
    assert_eq!(pay.ledger_sum().await, 10);
}

#[tokio::test]
async fn a_partial_creem_refund_of_a_yearly_period_claws_back_its_share() {
    let pay = pay_stack("pay-year-refund-creem").await;
    let transaction = yearly_creem_period(&pay).await;

    let refund = creem_subscription_refund("evt_c_r", &transaction, 29_999, 15_000);
    assert_received(&pay.creem(&refund).await);

    let share = 7200 * 15_000 / 29_999;
    assert_eq!(share, 3600);
    assert_eq!(pay.balance().await, 10 + 7200 - share);
    assert_eq!(pay.ledger_sum().await, 10 + 7200 - share);
}

#[tokio::test]
async fn an_inquiry_that_closes_without_a_loss_leaves_the_balance_where_it_was_before_it_opened() {
    let pay = pay_stack("pay-inquiry").await;
    let paid = yearly_stripe_period(&pay, "pi_inq").await;
    let before = pay.balance().await;

    for (id, kind, status) in [
        (
            "evt_inq_open",
            "charge.dispute.created",
            "warning_needs_response",
        ),
        (
            "evt_inq_review",
            "charge.dispute.updated",
            "warning_under_review",
        ),
        ("evt_inq_closed", "charge.dispute.closed", "warning_closed"),
    ] {
        assert_received(
            &pay.stripe(&stripe_dispute(id, kind, "pi_inq", paid, status))
                .await,
        );
        assert_eq!(
            pay.balance().await,
            before,
            "{status}: no funds were withdrawn"
        );
    }

    assert!(clawbacks(&pay.stack.ledger(&pay.token).await).is_empty());
    assert_eq!(pay.ledger_sum().await, before);
}

#[tokio::test]
async fn an_inquiry_escalated_to_a_chargeback_claws_back_when_the_funds_are_withdrawn() {
    let pay = pay_stack("pay-inquiry-escalated").await;
    let paid = yearly_stripe_period(&pay, "pi_esc").await;

    let inquiry = stripe_dispute(
        "evt_esc_1",
        "charge.dispute.created",
        "pi_esc",
        paid,
        "warning_needs_response",
    );
    assert_received(&pay.stripe(&inquiry).await);
    let before = pay.balance().await;
    let withdrawn = stripe_dispute(
        "evt_esc_2",
        "charge.dispute.funds_withdrawn",
        "pi_esc",
        paid,
        "needs_response",
    );
    assert_received(&pay.stripe(&withdrawn).await);

    assert_eq!(before, 10 + 7200);
    assert_eq!(pay.balance().await, 10);
}
