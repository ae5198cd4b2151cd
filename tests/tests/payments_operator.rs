//! Payments (`webhook`) kept for an operator: events no user can be found for, events
//! naming a product no id is configured for (parked), and their replay by `nb-admin`.

use e2e_tests::payments::*;
use serde_json::json;
use shared::aws::dynamo::StoreError;
use shared::aws::dynamo::payments::{EventOutcome, HeldKind};
use shared::payments::Provider;

// ---------------------------------------------------------------- attribution and replay

#[tokio::test]
async fn an_unattributable_event_is_stored_and_its_replay_applies_it_once() {
    let pay = pay_stack("pay-replay").await;
    let orphan = Invoice {
        user: None,
        ..paid_period(&pay.user, "sub_orphan", "cus_late", 0)
    };

    assert_received(
        &pay.stripe(&orphan.event("evt_orphan", "invoice.paid"))
            .await,
    );
    assert_eq!(pay.balance().await, 10);
    let stored = pay.stack.services.store.held_events(10).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].kind, HeldKind::Unattributed);
    assert_eq!(stored[0].event_id, "evt_orphan");
    assert_eq!(stored[0].provider, Provider::Stripe);

    // The cause is fixed: a later purchase by the user records that customer.
    pay.stripe(&stripe_purchase(
        "evt_buy",
        &pay.user,
        "credits_100",
        "pi_late",
        "cus_late",
        999,
    ))
    .await;
    assert_eq!(pay.balance().await, 110);
    let store = &pay.stack.services.store;
    let replayed = store
        .replay_event(
            Provider::Stripe,
            "evt_orphan",
            None,
            &settings(&pay.base),
            &act(),
        )
        .await
        .unwrap();
    let again = store
        .replay_event(
            Provider::Stripe,
            "evt_orphan",
            None,
            &settings(&pay.base),
            &act(),
        )
        .await;
    let redelivered = pay
        .stripe(&orphan.event("evt_orphan", "invoice.paid"))
        .await;

    assert_eq!(replayed, EventOutcome::Applied);
    assert!(matches!(again, Err(StoreError::NotFound)), "{again:?}");
    assert_received(&redelivered);
    assert_eq!(pay.balance().await, 710);
    assert!(store.held_events(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_operator_can_replay_an_unattributable_event_to_a_named_user() {
    let pay = pay_stack("pay-replay-user").await;
    let orphan = Invoice {
        user: None,
        ..paid_period(&pay.user, "sub_orphan", "cus_unknown", 0)
    };
    pay.stripe(&orphan.event("evt_orphan", "invoice.paid"))
        .await;

    let store = &pay.stack.services.store;
    let replayed = store
        .replay_event(
            Provider::Stripe,
            "evt_orphan",
            Some(pay.user_id()),
            &settings(&pay.base),
            &act(),
        )
        .await
        .unwrap();

    assert_eq!(replayed, EventOutcome::Applied);
    assert_eq!(pay.balance().await, 610);
    assert_eq!(pay.me().await["subscription"]["status"], "active");
}

#[tokio::test]
async fn the_admin_command_lists_and_replays_an_unattributed_event_once_even_when_run_twice() {
    let pay = pay_stack("pay-admin-replay").await;
    let orphan = Invoice {
        user: None,
        ..paid_period(&pay.user, "sub_admin", "cus_nobody", 0)
    };
    pay.stripe(&orphan.event("evt_admin", "invoice.paid")).await;
    let admin = pay.admin(settings(&pay.base));

    let listed = admin.held_events(10).await.unwrap();
    let without_user = admin
        .replay_event(Provider::Stripe, "evt_admin", None, "ticket 7")
        .await
        .unwrap();
    let first = admin
        .replay_event(
            Provider::Stripe,
            "evt_admin",
            Some(pay.user_id()),
            "ticket 7",
        )
        .await
        .unwrap();
    let second = admin
        .replay_event(
            Provider::Stripe,
            "evt_admin",
            Some(pay.user_id()),
            "ticket 7",
        )
        .await
        .unwrap();

    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].event_id, "evt_admin");
    assert_eq!(without_user, admin::ReplayOutcome::StillUnattributed);
    assert_eq!(first, admin::ReplayOutcome::Applied);
    assert_eq!(second, admin::ReplayOutcome::NotStored);
    assert_eq!(pay.balance().await, 610);
    assert!(admin.held_events(10).await.unwrap().is_empty());
}

// ---------------------------------------------------------------- parked: unmapped products

#[tokio::test]
async fn an_event_for_an_unmapped_product_is_answered_200_parked_listed_and_applied_once_by_replay_after_the_mapping_is_configured()
 {
    let pay = pay_stack_with("pay-parked", &["STRIPE_PRICE_PRO_YEARLY"]).await;
    let year = paid_year(&pay.user, "sub_parked", "cus_parked", 0);
    let event = year.event("evt_parked", "invoice.paid");

    let answer = pay.stripe(&event).await;
    let listed = pay.stack.services.store.held_events(10).await.unwrap();
    let still_unmapped = pay
        .admin(settings_without(&pay.base, &["STRIPE_PRICE_PRO_YEARLY"]))
        .replay_event(Provider::Stripe, "evt_parked", None, "ticket 7")
        .await
        .unwrap();
    let admin = pay.admin(settings(&pay.base));
    let replayed = admin
        .replay_event(Provider::Stripe, "evt_parked", None, "ticket 7")
        .await
        .unwrap();
    let again = admin
        .replay_event(Provider::Stripe, "evt_parked", None, "ticket 7")
        .await
        .unwrap();
    let redelivered = pay.stripe(&event).await;

    assert_received(&answer);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].kind, HeldKind::Parked);
    assert_eq!(listed[0].event_id, "evt_parked");
    assert!(
        listed[0].reason.contains("price_pro_yearly"),
        "{:?}",
        listed[0]
    );
    assert_eq!(still_unmapped, admin::ReplayOutcome::StillParked);
    assert_eq!(replayed, admin::ReplayOutcome::Applied);
    assert_eq!(again, admin::ReplayOutcome::NotStored);
    assert_received(&redelivered);
    assert_eq!(pay.balance().await, 10 + 7200, "granted once");
    assert!(
        pay.stack
            .services
            .store
            .held_events(10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn the_template_alarms_on_parked_and_on_unattributed_webhook_events() {
    let template =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml"))
            .expect("template.yaml");
    // A resource: from its name to the next line indented as little.
    let alarm = |name: &str| -> String {
        let start = template
            .find(&format!("\n  {name}:\n"))
            .unwrap_or_else(|| panic!("no {name} in the template"))
            + 1;
        let body = &template[start..];
        let end = body
            .match_indices("\n  ")
            .map(|(i, _)| i)
            .find(|&i| body[i + 3..].starts_with(|c: char| !c.is_whitespace()))
            .unwrap_or(body.len());
        body[..end].to_string()
    };

    let parked = alarm("ParkedWebhookEventsAlarm");
    let unattributed = alarm("UnattributedWebhookEventsAlarm");

    for (text, outcome) in [(&parked, "parked"), (&unattributed, "unattributed")] {
        assert!(text.contains("Type: AWS::CloudWatch::Alarm"));
        assert!(text.contains("MetricName: WebhookEvents"));
        assert!(text.contains(&format!("Value: {outcome}")), "{outcome}");
    }
}

#[tokio::test]
async fn a_creem_event_whose_product_is_unmapped_is_resolved_from_its_checkout_metadata() {
    let pay = pay_stack_with("pay-creem-metadata", &["CREEM_PRODUCT_CREDITS_100"]).await;

    let answer = pay
        .creem(&creem_purchase("evt_meta", &pay.user, "ord_meta", "test"))
        .await;

    assert_received(&answer);
    assert_eq!(pay.balance().await, 110);
    assert!(
        pay.stack
            .services
            .store
            .held_events(10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_creem_event_whose_product_is_unmapped_and_named_nowhere_is_parked() {
    let pay = pay_stack_with("pay-creem-parked", &["CREEM_PRODUCT_CREDITS_100"]).await;
    let mut event = creem_purchase("evt_nowhere", &pay.user, "ord_nowhere", "test");
    event["object"]["metadata"] = json!({"user_id": pay.user});

    let answer = pay.creem(&event).await;
    let listed = pay.stack.services.store.held_events(10).await.unwrap();
    let replayed = pay
        .admin(settings(&pay.base))
        .replay_event(Provider::Creem, "evt_nowhere", None, "ticket 7")
        .await
        .unwrap();

    assert_received(&answer);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].kind, HeldKind::Parked);
    assert_eq!(replayed, admin::ReplayOutcome::Applied);
    assert_eq!(pay.balance().await, 110);
}

/// An operator's act, as nb-admin records it.
fn act() -> shared::domain::audit::AuditRecord {
    shared::domain::audit::AuditRecord::by(
        shared::domain::audit::Actor::admin("ops-ada"),
        shared::domain::audit::AuditAction::AdminReplay,
        serde_json::json!({"reason": "ticket 7"}),
    )
}
