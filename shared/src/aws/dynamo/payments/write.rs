//! Writing what a rule decided: the event record and every effect in one transaction,
//! each write conditioned on what was read (absent, or the version read), so a plan made
//! stale by a concurrent event fails as a whole and is made again.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use time::OffsetDateTime;

use super::items::*;
use super::read::Versions;
use crate::aws::dynamo::DynamoStore;
use crate::aws::dynamo::expiry::HAS_EXPIRING;
use crate::aws::dynamo::keys::{self, PK, PROFILE, SK};
use crate::aws::dynamo::ledger::{BUMP_VERSION, RowMeta, number, put_new, rfc3339};
use crate::aws::dynamo::tx::{Role, Tx};
use crate::aws::dynamo::users::{Item, LIVE, item_key, to_item};
use crate::domain::UserId;
use crate::domain::audit::{Actor, AuditAction, AuditRecord};
use crate::domain::ledger::LedgerReason;
use crate::payments::rules::{CreditChange, CustomerLink, Effects, Sale, Show};
use crate::payments::{PaymentEvent, Provider};

impl DynamoStore {
    /// The event's record, first: its condition answers a duplicate.
    pub(super) fn push_event_record(
        &self,
        tx: &mut Tx,
        event: &PaymentEvent,
        user_id: Option<UserId>,
        held: bool,
        now: OffsetDateTime,
    ) {
        let record = EventRecord {
            pk: event_pk(event.provider, &event.id),
            sk: EVENT_SK.into(),
            provider: event.provider,
            event_id: event.id.clone(),
            event_type: event.event_type.clone(),
            user_id,
            held,
            applied_at: rfc3339(now),
        };
        tx.push(put_new(&self.table, to_item(&record)), Role::Guard);
    }

    /// The transaction of `effects`, with the event's record.
    pub(super) fn effects_tx(
        &self,
        event: &PaymentEvent,
        effects: &Effects,
        versions: Versions,
        operator: Option<&AuditRecord>,
        now: OffsetDateTime,
    ) -> Tx {
        let provider = event.provider;
        let mut tx = Tx::default();
        self.push_event_record(&mut tx, event, effects.user_id, false, now);
        if let Some(user) = effects.user_id {
            self.push_audit(
                &mut tx,
                user,
                &applied_entry(event, effects, user, operator),
                now,
            );
        }
        // One update per profile: a transaction touches an item once.
        let mut by_user: BTreeMap<UserId, Vec<&CreditChange>> = BTreeMap::new();
        for change in &effects.credits {
            by_user.entry(change.user_id).or_default().push(change);
        }
        let show_user = effects.show.as_ref().and(effects.user_id);
        if let Some(user) = show_user {
            by_user.entry(user).or_default();
        }
        for (user, changes) in by_user {
            let show = effects.show.as_ref().filter(|_| Some(user) == show_user);
            self.push_profile(&mut tx, user, &changes, show);
            let mut expiries = std::collections::BTreeSet::new();
            for change in changes {
                self.push_ledger_row(
                    &mut tx,
                    user,
                    change.delta,
                    change.reason,
                    &change.reference,
                    RowMeta {
                        expires_at: change.expires_at,
                        source: change.source.as_deref(),
                    },
                    now,
                );
                expiries.extend(change.expires_at.filter(|_| change.delta > 0));
            }
            for at in expiries {
                self.push_expiry_entry(&mut tx, user, at);
            }
        }
        if let Some(order) = &effects.order {
            let item = OrderItem {
                pk: order_pk(provider, &order.payment_id),
                sk: ORDER_SK.into(),
                order: order.clone(),
                version: versions.order.map_or(0, |v| v + 1),
                updated_at: rfc3339(now),
            };
            self.push_versioned(&mut tx, to_item(&item), versions.order, "order");
        }
        if let Some(period) = &effects.period {
            let item = GrantItem {
                pk: grant_pk(provider, &period.subscription_id, period.period_start),
                sk: GRANT_SK.into(),
                grant: period.clone(),
                created_at: rfc3339(now),
            };
            tx.push(
                put_new(&self.table, to_item(&item)),
                Role::Named("period grant"),
            );
        }
        if let Some(link) = &effects.invoice {
            let item = InvoiceItem {
                pk: invoice_pk(provider, &link.invoice_id),
                sk: INVOICE_SK.into(),
                link: link.clone(),
                version: versions.invoice.map_or(0, |v| v + 1),
                updated_at: rfc3339(now),
            };
            self.push_versioned(&mut tx, to_item(&item), versions.invoice, "invoice");
        }
        if let (Some(subscription), Some(user)) = (&effects.subscription, effects.user_id) {
            let item = SubItem {
                pk: keys::user_pk(user),
                sk: sub_sk(provider, &subscription.subscription_id),
                subscription: subscription.clone(),
                version: versions.subscription.map_or(0, |v| v + 1),
                updated_at: rfc3339(now),
            };
            self.push_versioned(
                &mut tx,
                to_item(&item),
                versions.subscription,
                "subscription",
            );
        }
        if let Some(link) = &effects.customer {
            self.push_customer(&mut tx, provider, link, now);
        }
        tx
    }

    /// The profile's update: the balance (net of this event's rows) and what subscription
    /// it shows, conditioned on the account being there and not deleted (and on it still
    /// showing what was read).
    fn push_profile(
        &self,
        tx: &mut Tx,
        user: UserId,
        changes: &[&CreditChange],
        show: Option<&Show>,
    ) {
        let delta: i64 = changes.iter().map(|c| c.delta).sum();
        let mut sets = vec!["credits = credits + :d".to_string()];
        let mut names = HashMap::new();
        let mut values = HashMap::from([(":d".to_string(), number(delta))]);
        let mut bump = "";
        if !changes.is_empty() {
            bump = BUMP_VERSION;
            values.insert(":one".to_string(), number(1));
        }
        if changes
            .iter()
            .any(|c| c.expires_at.is_some() && c.delta > 0)
        {
            sets.push(format!("{HAS_EXPIRING} = :expiring"));
            values.insert(":expiring".to_string(), AttributeValue::Bool(true));
        }
        let mut condition = format!("attribute_exists(pk) AND {LIVE}");
        if let Some(show) = show {
            sets.push("#sub = :sub, #subkey = :subkey".into());
            names.insert("#sub".to_string(), "subscription".to_string());
            names.insert("#subkey".to_string(), "subscription_key".to_string());
            values.insert(
                ":sub".to_string(),
                serde_dynamo::to_attribute_value(&show.summary)
                    .expect("a subscription summary always serializes"),
            );
            values.insert(":subkey".to_string(), AttributeValue::S(show.key.clone()));
            match &show.expected {
                Some(shown) => {
                    condition.push_str(" AND #subkey = :shown");
                    values.insert(":shown".to_string(), AttributeValue::S(shown.clone()));
                }
                None => condition.push_str(" AND attribute_not_exists(#subkey)"),
            }
        }
        let update = Update::builder()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(keys::user_pk(user)))
            .key(SK, AttributeValue::S(PROFILE.into()))
            .update_expression(format!("SET {} {bump}", sets.join(", ")))
            .condition_expression(condition)
            .set_expression_attribute_names((!names.is_empty()).then_some(names))
            .set_expression_attribute_values(Some(values))
            .return_values_on_condition_check_failure(
                aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
            )
            .build()
            .expect("table, key and expression are set");
        tx.push(
            TransactWriteItem::builder().update(update).build(),
            Role::Profile { user },
        );
    }

    /// Records who the customer is: created, or left alone when it names this user (a
    /// purchase planned without a read may find it there; its creation time is kept).
    fn push_customer(
        &self,
        tx: &mut Tx,
        provider: Provider,
        link: &CustomerLink,
        now: OffsetDateTime,
    ) {
        let mapping = CustomerItem {
            pk: customer_pk(provider, &link.customer_id),
            sk: CUSTOMER_SK.into(),
            provider,
            customer_id: link.customer_id.clone(),
            user_id: link.user_id,
            created_at: rfc3339(now),
        };
        let mut item = to_item(&mapping);
        let mut field = |name: &str| item.remove(name).expect("the mapping has it");
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(item_key(mapping.pk.clone(), &mapping.sk)))
            .update_expression("SET #p = :p, #c = :c, #u = :u, #t = if_not_exists(#t, :t)")
            .condition_expression("attribute_not_exists(pk) OR #u = :u")
            .expression_attribute_names("#p", "provider")
            .expression_attribute_names("#c", "customer_id")
            .expression_attribute_names("#u", "user_id")
            .expression_attribute_names("#t", "created_at")
            .expression_attribute_values(":p", field("provider"))
            .expression_attribute_values(":c", field("customer_id"))
            .expression_attribute_values(":u", field("user_id"))
            .expression_attribute_values(":t", field("created_at"))
            .build()
            .expect("table, key and expression are set");
        tx.push(
            TransactWriteItem::builder().update(update).build(),
            Role::Named("customer"),
        );
        let reverse = UserCustomerItem {
            pk: keys::user_pk(link.user_id),
            sk: user_customer_sk(provider),
            customer_id: link.customer_id.clone(),
        };
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(to_item(&reverse)))
            .build()
            .expect("table and item are set");
        tx.push(
            TransactWriteItem::builder().put(put).build(),
            Role::Named("user customer"),
        );
    }

    /// A put conditioned on the item being absent (`expected` none) or at that version.
    fn push_versioned(&self, tx: &mut Tx, item: Item, expected: Option<u64>, name: &'static str) {
        let put = Put::builder().table_name(&self.table).set_item(Some(item));
        let put = match expected {
            None => put.condition_expression("attribute_not_exists(pk)"),
            Some(version) => put
                .condition_expression("#v = :v")
                .expression_attribute_names("#v", "version")
                .expression_attribute_values(":v", number(version as i64)),
        };
        tx.push(
            TransactWriteItem::builder()
                .put(put.build().expect("table and item are set"))
                .build(),
            Role::Named(name),
        );
    }
}

/// The metrics of what an applied event did.
pub(super) fn emit(provider: Provider, effects: &Effects) {
    let provider = provider.as_str();
    match effects.sale {
        Some(Sale::Purchase(product)) => crate::metrics::count(
            "Purchases",
            1,
            &[("Provider", provider), ("Product", product)],
        ),
        Some(Sale::Renewal(product)) => crate::metrics::count(
            "SubscriptionRenewals",
            1,
            &[("Provider", provider), ("Product", product)],
        ),
        None => {}
    }
    for change in &effects.credits {
        if change.delta > 0 {
            crate::metrics::count(
                "CreditsGranted",
                change.delta as u64,
                &[("Reason", change.reason.as_str())],
            );
        } else if change.reason == LedgerReason::Clawback {
            crate::metrics::count(
                "CreditsClawedBack",
                change.delta.unsigned_abs(),
                &[("Provider", provider)],
            );
        }
    }
}

/// The security log's entry of an applied event: by the provider that sent it, or the
/// operator's act that replayed it (`admin_replay`, their name and reason); what it moved
/// for `user`.
fn applied_entry(
    event: &PaymentEvent,
    effects: &Effects,
    user: UserId,
    operator: Option<&AuditRecord>,
) -> AuditRecord {
    let credits: i64 = effects
        .credits
        .iter()
        .filter(|c| c.user_id == user)
        .map(|c| c.delta)
        .sum();
    let detail = serde_json::json!({
        "provider": event.provider,
        "event_id": event.id,
        "event_type": event.event_type,
        "credits": credits,
    });
    match operator {
        Some(act) => {
            let mut entry = act.clone();
            if let (Some(into), serde_json::Value::Object(event)) =
                (entry.detail.as_object_mut(), detail)
            {
                into.extend(event);
            }
            entry
        }
        None => AuditRecord::by(
            provider_actor(event.provider),
            AuditAction::PaymentApplied,
            detail,
        ),
    }
}

pub(super) fn provider_actor(provider: Provider) -> Actor {
    match provider {
        Provider::Stripe => Actor::Stripe,
        Provider::Creem => Actor::Creem,
    }
}
