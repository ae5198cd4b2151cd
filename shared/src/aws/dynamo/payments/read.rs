//! Reading the state an event's rule needs: one `BatchGetItem` of the keys
//! [`rules::wanted`] names, a second only where the first named more (the user a customer
//! is mapped to; a Stripe period's payment, known from its invoice link).

use std::collections::BTreeSet;

use super::items::*;
use crate::aws::dynamo::keys::{self, PK, PROFILE, SK};
use crate::aws::dynamo::users::{Item, from_item, is_deleted, item_key};
use crate::aws::dynamo::{DynamoStore, StoreError};
use crate::domain::UserId;
use crate::domain::payment::SubscriptionSummary;
use crate::payments::rules::{self, Account, Shown, State};
use crate::payments::{Payer, PaymentEvent};

/// The versions read, which the writes are conditioned on (`None`: absent).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Versions {
    pub order: Option<u64>,
    pub invoice: Option<u64>,
    pub subscription: Option<u64>,
}

/// What was read for an event: the rule's state and the versions to write against.
#[derive(Debug, Default)]
pub(super) struct Read {
    pub state: State,
    pub versions: Versions,
}

fn find<'a>(items: &'a [Item], pk: &str, sk: &str) -> Option<&'a Item> {
    items.iter().find(|i| {
        i.get(PK).and_then(|v| v.as_s().ok()).map(String::as_str) == Some(pk)
            && i.get(SK).and_then(|v| v.as_s().ok()).map(String::as_str) == Some(sk)
    })
}

fn parse<T: serde::de::DeserializeOwned>(item: Option<&Item>) -> Result<Option<T>, StoreError> {
    item.cloned().map(from_item).transpose()
}

impl DynamoStore {
    /// The state of `event`, read consistently. `assign_to` is an operator's choice of
    /// payer; `deleted` the users a refused write showed to be deleted.
    pub(super) async fn read_state(
        &self,
        event: &PaymentEvent,
        assign_to: Option<UserId>,
        deleted: &BTreeSet<UserId>,
    ) -> Result<Read, StoreError> {
        let provider = event.provider;
        let wanted = rules::wanted(event);
        let event_key = (event_pk(provider, &event.id), EVENT_SK.to_string());
        let order_key = |payment: &str| (order_pk(provider, payment), ORDER_SK.to_string());
        let payer: Option<&Payer> = wanted.payer;
        let customer_key = payer
            .and_then(|p| p.customer_id.as_deref())
            .map(|c| (customer_pk(provider, c), CUSTOMER_SK.to_string()));
        let claimed = assign_to.or_else(|| payer.and_then(Payer::user));
        let user_keys = |user: UserId| {
            let mut keys = vec![(keys::user_pk(user), PROFILE.to_string())];
            if let Some(sub) = wanted.subscription {
                keys.push((keys::user_pk(user), sub_sk(provider, sub)));
            }
            keys
        };
        let mut keys = vec![event_key.clone()];
        keys.extend(wanted.payment.map(order_key));
        keys.extend(
            wanted
                .period
                .map(|(sub, start)| (grant_pk(provider, sub, start), GRANT_SK.to_string())),
        );
        keys.extend(
            wanted
                .invoice
                .map(|i| (invoice_pk(provider, i), INVOICE_SK.to_string())),
        );
        keys.extend(customer_key.clone());
        if let Some(user) = claimed {
            keys.extend(user_keys(user));
        }
        let mut items = self.read_keys(&keys).await?;
        let get = |items: &[Item], key: &Option<(String, String)>| {
            key.as_ref()
                .and_then(|(pk, sk)| find(items, pk, sk))
                .cloned()
        };
        let mut read = Read {
            state: State {
                recorded: find(&items, &event_key.0, &event_key.1).is_some(),
                deleted: deleted.clone(),
                ..State::default()
            },
            ..Read::default()
        };
        if read.state.recorded {
            return Ok(read);
        }
        let invoice: Option<InvoiceItem> = parse(
            get(
                &items,
                &wanted
                    .invoice
                    .map(|i| (invoice_pk(provider, i), INVOICE_SK.to_string())),
            )
            .as_ref(),
        )?;
        let mut order_id = wanted.payment.map(str::to_string);
        if order_id.is_none()
            && let Some(payment) = rules::linked_payment(event, invoice.as_ref().map(|i| &i.link))
        {
            items.extend(self.read_keys(&[order_key(payment)]).await?);
            order_id = Some(payment.to_string());
        }
        let order: Option<OrderItem> =
            parse(get(&items, &order_id.as_deref().map(order_key)).as_ref())?;
        let period: Option<GrantItem> = parse(
            get(
                &items,
                &wanted
                    .period
                    .map(|(sub, start)| (grant_pk(provider, sub, start), GRANT_SK.to_string())),
            )
            .as_ref(),
        )?;
        read.versions.order = order.as_ref().map(|o| o.version);
        read.versions.invoice = invoice.as_ref().map(|i| i.version);
        read.state.order = order.map(|o| o.order);
        read.state.invoice = invoice.map(|i| i.link);
        read.state.period = period.map(|g| g.grant);
        read.state.mapped_to =
            parse::<CustomerItem>(get(&items, &customer_key).as_ref())?.map(|c| c.user_id);
        if payer.is_none() {
            return Ok(read);
        }
        // The checkout's metadata (or the operator) first, where that user exists; then
        // the customer mapping.
        let profile_of =
            |items: &[Item], user: UserId| find(items, &keys::user_pk(user), PROFILE).cloned();
        let (user, items) = match claimed.filter(|u| profile_of(&items, *u).is_some()) {
            Some(user) => (Some(user), items),
            None => match read.state.mapped_to {
                Some(user) if Some(user) != claimed => {
                    (Some(user), self.read_keys(&user_keys(user)).await?)
                }
                _ => (None, items),
            },
        };
        let Some(user) = user else {
            return Ok(read);
        };
        let Some(profile) = profile_of(&items, user) else {
            return Ok(read);
        };
        read.state.account = Some(Account {
            user_id: user,
            deleted: is_deleted(&profile),
        });
        read.state.shown = Shown {
            key: profile
                .get("subscription_key")
                .and_then(|v| v.as_s().ok())
                .cloned(),
            active: profile
                .get("subscription")
                .cloned()
                .and_then(|v| serde_dynamo::from_attribute_value::<_, SubscriptionSummary>(v).ok())
                .is_some_and(|s| s.is_active()),
        };
        if let Some(sub) = wanted.subscription {
            let item: Option<SubItem> =
                parse(find(&items, &keys::user_pk(user), &sub_sk(provider, sub)))?;
            read.versions.subscription = item.as_ref().map(|s| s.version);
            read.state.subscription = item.map(|s| s.subscription);
        }
        Ok(read)
    }

    async fn read_keys(&self, keys: &[(String, String)]) -> Result<Vec<Item>, StoreError> {
        let mut unique: Vec<Item> = Vec::new();
        for (pk, sk) in keys {
            let key = item_key(pk.clone(), sk);
            if !unique.contains(&key) {
                unique.push(key);
            }
        }
        self.batch_get(unique).await
    }
}
