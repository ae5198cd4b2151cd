//! Reads for the operator's command (`nb-admin`): whole-table walks that no request path
//! makes. They page with a limit and leave pacing to the caller, so they can run against
//! production without eating its capacity.

use aws_sdk_dynamodb::types::AttributeValue;

use super::generations::GenerationItem;
use super::keys::PROFILE;
use super::users::{Item, from_item};
use super::{DynamoStore, StoreError, sdk_error};
use crate::domain::generation::Generation;
use crate::domain::user::User;
use crate::domain::{GenerationId, UserId};

/// Where the next page of a scan starts.
#[derive(Debug, Clone)]
pub struct ScanCursor(Item);

/// One page of a scan.
#[derive(Debug, Clone)]
pub struct ScanPage<T> {
    pub items: Vec<T>,
    pub next: Option<ScanCursor>,
}

impl DynamoStore {
    /// Users' ids and balances from one segment of a parallel scan.
    pub async fn balances_page(
        &self,
        segment: i32,
        total_segments: i32,
        limit: i32,
        cursor: Option<ScanCursor>,
    ) -> Result<ScanPage<(UserId, i64)>, StoreError> {
        let out = self
            .client
            .scan()
            .table_name(&self.table)
            .segment(segment)
            .total_segments(total_segments)
            .limit(limit)
            .filter_expression("sk = :profile")
            .expression_attribute_values(":profile", AttributeValue::S(PROFILE.into()))
            .projection_expression("id, credits")
            .set_exclusive_start_key(cursor.map(|c| c.0))
            .send()
            .await
            .map_err(sdk_error)?;
        let items = out
            .items()
            .iter()
            .filter_map(|item| {
                let id = item
                    .get("id")?
                    .as_s()
                    .ok()
                    .and_then(|s| UserId::parse(s).ok())?;
                let credits = item.get("credits")?.as_n().ok()?.parse().ok()?;
                Some((id, credits))
            })
            .collect();
        Ok(ScanPage {
            items,
            next: out.last_evaluated_key.map(ScanCursor),
        })
    }

    /// The user with this email (there is no email index: sign-in never looks users up
    /// by email, so only the operator pays for this walk).
    pub async fn find_user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        let found = self
            .scan_for(
                "sk = :profile AND email = :email",
                &[(":profile", PROFILE), (":email", email)],
            )
            .await?;
        match found.and_then(|item| {
            item.get("id")?
                .as_s()
                .ok()
                .and_then(|s| UserId::parse(s).ok())
        }) {
            Some(id) => self.get_user(id).await,
            None => Ok(None),
        }
    }

    /// A generation by id alone, whoever owns it.
    pub async fn find_generation(
        &self,
        id: GenerationId,
    ) -> Result<Option<Generation>, StoreError> {
        let sk = format!("GEN#{id}");
        let found = self.scan_for("sk = :sk", &[(":sk", sk.as_str())]).await?;
        found
            .map(|item| from_item::<GenerationItem>(item).map(GenerationItem::into_generation))
            .transpose()
    }

    async fn scan_for(
        &self,
        filter: &str,
        values: &[(&str, &str)],
    ) -> Result<Option<Item>, StoreError> {
        let mut start = None;
        loop {
            let mut scan = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression(filter)
                .limit(500)
                .set_exclusive_start_key(start);
            for (name, value) in values {
                scan = scan
                    .expression_attribute_values(*name, AttributeValue::S((*value).to_string()));
            }
            let out = scan.send().await.map_err(sdk_error)?;
            if let Some(item) = out.items.and_then(|mut items| items.pop()) {
                return Ok(Some(item));
            }
            match out.last_evaluated_key {
                Some(key) => start = Some(key),
                None => return Ok(None),
            }
        }
    }
}
