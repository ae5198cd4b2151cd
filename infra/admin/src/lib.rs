//! The operator's command, as a library so that tests drive it against the emulator.
//! Every change of money goes through the same store functions the service uses, so it
//! keeps the same rules: applied once per reference, refunded once per generation.

use std::time::Duration;

use anyhow::Context;
use shared::aws::Clients;
use shared::aws::dynamo::expiry::ExpiryReport;
use shared::aws::dynamo::hooks::Delivery;
use shared::aws::dynamo::payments::{EventOutcome, HeldEvent};
use shared::aws::dynamo::work::Finisher;
use shared::aws::dynamo::{Applied, BalanceChange, DynamoStore, StoreError};
use shared::aws::sqs::JobQueue;
use shared::domain::audit::{Actor, AuditAction, AuditEntry, AuditRecord};
use shared::domain::expiry::GrantLeft;
use shared::domain::generation::{Generation, GenerationError};
use shared::domain::ledger::LedgerEntry;
use shared::domain::user::User;
use shared::domain::{GenerationId, LedgerId, UserId};
use shared::hooks::{HookEvent, HookJob};
use shared::payments::{PaymentSettings, Provider};

/// Where the tool points.
pub struct Admin {
    pub store: DynamoStore,
    pub queue: JobQueue,
    pub queue_url: String,
    pub dlq_url: Option<String>,
    /// The deployment's price and product ids (`STRIPE_PRICE_*`, `CREEM_PRODUCT_*`): a
    /// parked event is read again with them.
    pub payments: PaymentSettings,
    /// Who runs the command (`--by`, else the login name): the one name the ledger row's
    /// note and the security log's `admin:<name>` both carry.
    pub operator: String,
}

/// A user whose balance is not the sum of their ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub user: UserId,
    pub balance: i64,
    pub ledger_sum: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciliation {
    pub users: usize,
    pub mismatches: Vec<Mismatch>,
    /// Users whose `expired` rows are not what replaying their ledger gives.
    pub expiry_mismatches: Vec<(UserId, ExpiryReport)>,
}

impl Reconciliation {
    pub fn is_clean(&self) -> bool {
        self.mismatches.is_empty() && self.expiry_mismatches.is_empty()
    }
}

/// An expiry is reported missing only when it is this much overdue: the sweeper runs every
/// minute, and a refund to an expired grant waits for its next run.
pub const EXPIRY_SLACK: Duration = Duration::from_secs(10 * 60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantOutcome {
    Applied(LedgerId),
    AlreadyApplied,
    DryRun,
}

/// What replaying a stored payment event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayOutcome {
    Applied,
    /// Its effect was applied before (by a delivery or an earlier replay).
    AlreadyApplied,
    /// An event type that moves nothing.
    Ignored,
    /// Still no user: name one with `--user`.
    StillUnattributed,
    /// Its product is still not mapped: configure the id, then replay.
    StillParked,
    /// The account it is for is deleted: nothing applied; acknowledged (removed).
    DeletedAccount,
    /// Nothing stored under that id (never stored, or replayed already).
    NotStored,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundOutcome {
    Refunded { credits: i64 },
    AlreadyFinished,
    NotFound,
    WouldRefund { credits: i64 },
}

/// What `user show` prints.
#[derive(Debug, Clone)]
pub struct UserReport {
    pub user: User,
    pub recent_ledger: Vec<LedgerEntry>,
    /// The grants the replay of the ledger keeps, with what is left of each.
    pub grants: Vec<GrantLeft>,
}

impl Admin {
    /// `TABLE_NAME`, `QUEUE_URL` and (for `dlq replay`) `DLQ_URL`, with the usual AWS
    /// credentials and region (or `AWS_ENDPOINT_URL` for the local stack); the payment
    /// ids as the webhook function reads them.
    pub async fn from_env(
        table: String,
        queue_url: String,
        dlq_url: Option<String>,
        operator: String,
    ) -> anyhow::Result<Self> {
        let sdk = shared::aws::load_sdk_config().await?;
        let clients = Clients::new(&sdk, None);
        Ok(Self {
            store: DynamoStore::new(clients.dynamo, table),
            queue: JobQueue::new(clients.sqs, queue_url.clone()),
            queue_url,
            dlq_url,
            payments: PaymentSettings::from_lookup(|name| std::env::var(name).ok())?,
            operator,
        })
    }

    /// For every user, balance = sum of the ledger. Walks the table in `segments` parallel
    /// scan segments of `page_size` items, pausing `pause` between pages; a mismatch is
    /// read again before it is reported (a write may have landed between the two reads).
    pub async fn reconcile(
        &self,
        segments: usize,
        page_size: i32,
        pause: Duration,
    ) -> anyhow::Result<Reconciliation> {
        let segments = segments.max(1);
        let walks = (0..segments).map(|segment| {
            self.reconcile_segment(segment as i32, segments as i32, page_size, pause)
        });
        let mut report = Reconciliation {
            users: 0,
            mismatches: Vec::new(),
            expiry_mismatches: Vec::new(),
        };
        for result in futures_util::future::join_all(walks).await {
            let (users, mismatches, expiries) = result?;
            report.users += users;
            report.mismatches.extend(mismatches);
            report.expiry_mismatches.extend(expiries);
        }
        report.mismatches.sort_by_key(|m| m.user);
        report.expiry_mismatches.sort_by_key(|(user, _)| *user);
        Ok(report)
    }

    async fn reconcile_segment(
        &self,
        segment: i32,
        segments: i32,
        page_size: i32,
        pause: Duration,
    ) -> anyhow::Result<(usize, Vec<Mismatch>, Vec<(UserId, ExpiryReport)>)> {
        let mut cursor = None;
        let mut users = 0;
        let mut mismatches = Vec::new();
        let mut expiries = Vec::new();
        loop {
            let page = self
                .store
                .balances_page(segment, segments, page_size, cursor)
                .await?;
            for (user, balance) in page.items {
                users += 1;
                let sum = self.store.ledger_sum(user).await?;
                if sum != balance {
                    let again = self.store.get_user(user).await?.map(|u| u.credits);
                    let sum_again = self.store.ledger_sum(user).await?;
                    if again != Some(sum_again) {
                        mismatches.push(Mismatch {
                            user,
                            balance: again.unwrap_or(balance),
                            ledger_sum: sum_again,
                        });
                    }
                }
                let overdue = time::OffsetDateTime::now_utc() - EXPIRY_SLACK;
                let check = self.store.check_expiries(user, overdue).await?;
                if !check.is_clean() {
                    expiries.push((user, check));
                }
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok((users, mismatches, expiries)),
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// Adds (or, negative, removes) credits with an `admin` ledger row naming the operator
    /// and the reason. Applied once per reference: by default the reference is derived
    /// from (user, credits, reason), so running the same command twice grants once.
    pub async fn grant(
        &self,
        user: UserId,
        credits: i64,
        reason: &str,
        reference: Option<&str>,
        dry_run: bool,
    ) -> anyhow::Result<GrantOutcome> {
        anyhow::ensure!(credits != 0, "--credits must not be 0");
        anyhow::ensure!(!reason.trim().is_empty(), "--reason must say why");
        anyhow::ensure!(self.store.get_user(user).await?.is_some(), "no user {user}");
        let reference = match reference {
            Some(r) => r.to_string(),
            None => {
                use sha2::{Digest, Sha256};
                let digest = Sha256::digest(format!("{user}|{credits}|{reason}").as_bytes());
                let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
                format!("admin-{hex}")
            }
        };
        if dry_run {
            return Ok(GrantOutcome::DryRun);
        }
        let note = format!("by {}: {reason}", self.operator);
        let entry = self.act(
            AuditAction::AdminGrant,
            serde_json::json!({"credits": credits, "reason": reason, "ref": reference}),
        );
        let change = BalanceChange::admin(user, credits, reference, note);
        Ok(
            match self.store.apply_recorded(&change, Some(&entry)).await? {
                Applied::Applied(id) => GrantOutcome::Applied(id),
                Applied::AlreadyApplied => GrantOutcome::AlreadyApplied,
            },
        )
    }

    pub async fn generation(&self, id: GenerationId) -> anyhow::Result<Option<Generation>> {
        Ok(self.store.find_generation(id).await?)
    }

    /// Finishes a stuck generation with the worker's rule: succeeded with what it has or
    /// failed, the rest refunded, exactly once.
    pub async fn refund_generation(
        &self,
        id: GenerationId,
        reason: &str,
        dry_run: bool,
    ) -> anyhow::Result<RefundOutcome> {
        anyhow::ensure!(!reason.trim().is_empty(), "--reason must say why");
        let Some(generation) = self.store.find_generation(id).await? else {
            return Ok(RefundOutcome::NotFound);
        };
        if generation.status.is_final() {
            return Ok(RefundOutcome::AlreadyFinished);
        }
        let n = i64::from(generation.n.max(1));
        let credits = generation.cost / n * (n - (generation.images.len() as i64).min(n));
        if dry_run {
            return Ok(RefundOutcome::WouldRefund { credits });
        }
        let error = GenerationError {
            code: "refunded_by_operator".into(),
            message: "the generation was stopped and refunded by support".into(),
        };
        let entry = self.act(
            AuditAction::AdminRefund,
            serde_json::json!({"generation_id": id, "credits": credits, "reason": reason}),
        );
        Ok(
            if self
                .store
                .finish_recorded(&generation, &[], Finisher::Deadline, error, Some(&entry))
                .await?
                .is_some()
            {
                RefundOutcome::Refunded { credits }
            } else {
                RefundOutcome::AlreadyFinished
            },
        )
    }

    /// Moves DLQ messages back to the main queue; returns how many moved.
    pub async fn dlq_replay(&self, max: usize, dry_run: bool) -> anyhow::Result<usize> {
        let dlq = self
            .dlq_url
            .as_deref()
            .context("DLQ_URL (or --dlq-url) is not set")?;
        if dry_run {
            return Ok(0);
        }
        Ok(self.queue.move_messages(dlq, &self.queue_url, max).await?)
    }

    /// Payment events kept for an operator: unattributed, parked (unmapped product), held
    /// for a deleted account.
    pub async fn held_events(&self, limit: i32) -> anyhow::Result<Vec<HeldEvent>> {
        Ok(self.store.held_events(limit).await?)
    }

    /// Applies a kept payment event once, through the webhook's own code: to `user` if
    /// given (the operator's decision), else by attribution again; a parked one is read
    /// again with this deployment's product ids.
    pub async fn replay_event(
        &self,
        provider: Provider,
        event_id: &str,
        user: Option<UserId>,
        reason: &str,
    ) -> anyhow::Result<ReplayOutcome> {
        anyhow::ensure!(!reason.trim().is_empty(), "--reason must say why");
        let act = self.act(
            AuditAction::AdminReplay,
            serde_json::json!({"reason": reason}),
        );
        Ok(
            match self
                .store
                .replay_event(provider, event_id, user, &self.payments, &act)
                .await
            {
                Ok(EventOutcome::Applied) => ReplayOutcome::Applied,
                Ok(EventOutcome::Duplicate) => ReplayOutcome::AlreadyApplied,
                Ok(EventOutcome::Ignored) => ReplayOutcome::Ignored,
                Ok(EventOutcome::Unattributed) => ReplayOutcome::StillUnattributed,
                Ok(EventOutcome::Parked) => ReplayOutcome::StillParked,
                Ok(EventOutcome::Held { .. }) => ReplayOutcome::DeletedAccount,
                Err(StoreError::NotFound) => ReplayOutcome::NotStored,
                Err(e) => return Err(e.into()),
            },
        )
    }

    /// A user's security log, newest first, of one action (as API.md names it) and since
    /// a time (RFC 3339, or a date for its midnight UTC) when given.
    pub async fn audit(
        &self,
        user: UserId,
        action: Option<&str>,
        since: Option<&str>,
    ) -> anyhow::Result<Vec<AuditEntry>> {
        let action = action
            .map(|a| {
                AuditAction::parse(a)
                    .with_context(|| format!("unknown action {a:?} (API.md, Security log)"))
            })
            .transpose()?;
        let since = since.map(parse_since).transpose()?;
        Ok(self.store.audit_entries(user, action, since).await?)
    }

    /// A user by id (`usr_…`) or email, with the last 10 ledger rows.
    pub async fn user_report(&self, who: &str) -> anyhow::Result<Option<UserReport>> {
        let user = match UserId::parse(who) {
            Ok(id) => self.store.get_user(id).await?,
            Err(_) => {
                self.store
                    .find_user_by_email(&who.trim().to_ascii_lowercase())
                    .await?
            }
        };
        let Some(user) = user else { return Ok(None) };
        let (recent_ledger, _) = self.store.ledger_page(user.id, 10, None).await?;
        let grants = self.store.grants_left(user.id).await?;
        Ok(Some(UserReport {
            user,
            recent_ledger,
            grants,
        }))
    }
}

/// What replaying a completion webhook did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookReplay {
    /// Reopened and sent to the hooks queue: it is attempted again (with a fresh schedule).
    Sent,
    /// No such generation, or it has no delivery of that event.
    NotFound,
}

impl Admin {
    /// A user's completion-webhook deliveries with their attempts.
    pub async fn webhook_deliveries(&self, user: UserId) -> anyhow::Result<Vec<Delivery>> {
        Ok(self.store.user_deliveries(user).await?)
    }

    /// Sends one event of a generation again, whatever became of its delivery (the
    /// receiver's `webhook-id` is the same, so a receiver that deduplicates is safe).
    pub async fn replay_webhook(
        &self,
        generation: GenerationId,
        event: HookEvent,
        hooks_queue_url: &str,
    ) -> anyhow::Result<WebhookReplay> {
        let Some(found) = self.store.find_generation(generation).await? else {
            return Ok(WebhookReplay::NotFound);
        };
        let job = HookJob {
            user_id: found.user_id,
            generation_id: generation,
            event,
        };
        match self.store.reopen_delivery(&job).await {
            Ok(()) => {}
            Err(StoreError::NotFound) => return Ok(WebhookReplay::NotFound),
            Err(e) => return Err(e.into()),
        }
        self.queue
            .send_to(hooks_queue_url, &job)
            .await
            .context("sending the webhook event to the hooks queue")?;
        Ok(WebhookReplay::Sent)
    }
}

impl Admin {
    /// This operator's act, for the security log.
    fn act(&self, action: AuditAction, detail: serde_json::Value) -> AuditRecord {
        AuditRecord::by(Actor::admin(&self.operator), action, detail)
    }
}

/// `--since`: an RFC 3339 time, or a date (`2026-12-01`) for its midnight UTC.
pub fn parse_since(text: &str) -> anyhow::Result<time::OffsetDateTime> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(at) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(at);
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(text, &format).with_context(|| {
        format!("--since {text:?}: expected 2026-12-01 or 2026-12-01T10:00:00Z")
    })?;
    Ok(date.midnight().assume_utc())
}
