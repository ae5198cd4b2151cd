//! `nb-admin`: reconcile balances, grant credits, refund stuck generations, replay the
//! DLQ and payment events, look users up. Run with AWS credentials for the stack (or
//! `AWS_ENDPOINT_URL` for the local one). Exit status: 0 done, 1 failed, 2 found problems.

use std::process::ExitCode;
use std::time::Duration;

use admin::{Admin, GrantOutcome, RefundOutcome, ReplayOutcome, WebhookReplay};
use clap::{Parser, Subcommand};
use shared::domain::{GenerationId, UserId};
use shared::hooks::HookEvent;
use shared::payments::Provider;

#[derive(Parser)]
#[command(
    name = "nb-admin",
    about = "Operate Nano Banana Pro AI: balances, refunds, replays",
    version
)]
struct Cli {
    /// The DynamoDB table.
    #[arg(long, env = "TABLE_NAME", global = true, default_value = "")]
    table: String,
    /// The generation queue.
    #[arg(long, env = "QUEUE_URL", global = true, default_value = "")]
    queue_url: String,
    /// The dead-letter queue.
    #[arg(long, env = "DLQ_URL", global = true)]
    dlq_url: Option<String>,
    /// Who runs the command: named on the ledger rows and in the user's security log
    /// (`admin:<name>`). Defaults to the login name.
    #[arg(long, env = "NB_ADMIN_BY", global = true)]
    by: Option<String>,
    /// The completion webhooks' queue (for `webhooks replay`).
    #[arg(long, env = "HOOKS_QUEUE_URL", global = true)]
    hooks_queue_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check that every user's balance equals the sum of their ledger (exit 2 on a mismatch).
    Reconcile {
        /// Parallel scan segments.
        #[arg(long, default_value_t = 4)]
        segments: usize,
        /// Items per scan page.
        #[arg(long, default_value_t = 100)]
        page_size: i32,
        /// Pause between pages, in milliseconds (throttle against production).
        #[arg(long, default_value_t = 100)]
        pause_ms: u64,
    },
    /// Add (or, negative, remove) credits with an admin ledger row.
    Grant {
        #[arg(long)]
        user: String,
        #[arg(long, allow_hyphen_values = true)]
        credits: i64,
        /// Why: kept on the ledger row and in the security log with the operator.
        #[arg(long)]
        reason: String,
        /// Applied once per reference (default: derived from user, credits and reason).
        #[arg(long = "ref")]
        reference: Option<String>,
        #[arg(long)]
        dry_run: bool,
    },
    /// Inspect or refund a generation.
    Generation {
        #[command(subcommand)]
        action: GenerationAction,
    },
    /// Dead-letter queue.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Payment events kept for an operator: unattributed, parked for an unmapped product,
    /// or held for a deleted account.
    Events {
        #[command(subcommand)]
        action: EventsAction,
    },
    /// Completion webhooks: deliveries and their attempts.
    Webhooks {
        #[command(subcommand)]
        action: WebhooksAction,
    },
    /// Look a user up by id or email.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// A user's security log (what was done to the account and by whom).
    Audit {
        #[command(subcommand)]
        action: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Print a user's entries, newest first.
    List {
        #[arg(long)]
        user: String,
        /// Only this action (`sign_in`, `admin_grant`, ...).
        #[arg(long)]
        action: Option<String>,
        /// Only entries from then on: `2026-12-01` or `2026-12-01T10:00:00Z`.
        #[arg(long)]
        since: Option<String>,
    },
}

#[derive(Subcommand)]
enum GenerationAction {
    /// Print a generation.
    Show { id: String },
    /// Finish a stuck generation and refund what it did not produce, exactly once.
    Refund {
        id: String,
        /// Why (kept in the user's security log with the operator's name).
        #[arg(long)]
        reason: String,
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum DlqAction {
    /// Move DLQ messages back to the main queue.
    Replay {
        #[arg(long, default_value_t = 1000)]
        max: usize,
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum EventsAction {
    /// List the kept events (kind, provider, id, type, received, reason).
    List {
        #[arg(long, default_value_t = 100)]
        limit: i32,
    },
    /// Apply a kept event once, after fixing its cause (an unmapped product: set its
    /// STRIPE_PRICE_* / CREEM_PRODUCT_* variable here as in the webhook function).
    Replay {
        /// stripe or creem
        provider: String,
        event_id: String,
        /// Apply it to this user (else attribution is tried again).
        #[arg(long)]
        user: Option<String>,
        /// Why: kept in the user's security log with the operator.
        #[arg(long)]
        reason: String,
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum WebhooksAction {
    /// A user's deliveries, newest generation first, with every attempt.
    List {
        #[arg(long)]
        user: String,
    },
    /// Send one event of a generation again (its attempts start over).
    Replay {
        generation: String,
        /// started or completed
        #[arg(default_value = "completed")]
        event: String,
    },
}

#[derive(Subcommand)]
enum UserAction {
    /// Profile, balance, recent ledger, subscription.
    Show { who: String },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(!cli.table.is_empty(), "set TABLE_NAME or --table");
    let hooks_queue_url = cli.hooks_queue_url;
    let operator = cli
        .by
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .unwrap_or_else(|| "operator".into());
    let admin = Admin::from_env(cli.table, cli.queue_url, cli.dlq_url, operator).await?;
    match cli.command {
        Command::Reconcile {
            segments,
            page_size,
            pause_ms,
        } => {
            let report = admin
                .reconcile(segments, page_size, Duration::from_millis(pause_ms))
                .await?;
            for m in &report.mismatches {
                println!(
                    "MISMATCH {} balance={} ledger_sum={}",
                    m.user, m.balance, m.ledger_sum
                );
            }
            for (user, check) in &report.expiry_mismatches {
                for wrong in &check.wrong {
                    println!(
                        "EXPIRY {user} row={} grant={} recorded={} replayed={}",
                        wrong.row, wrong.grant, wrong.recorded, wrong.expected
                    );
                }
                for (grant, credits) in &check.missing {
                    println!("EXPIRY {user} grant={grant} overdue={credits}");
                }
            }
            println!(
                "checked {} users, {} mismatches, {} with expiries the replay does not give",
                report.users,
                report.mismatches.len(),
                report.expiry_mismatches.len()
            );
            Ok(if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Command::Grant {
            user,
            credits,
            reason,
            reference,
            dry_run,
        } => {
            let user = UserId::parse(&user)?;
            match admin
                .grant(user, credits, &reason, reference.as_deref(), dry_run)
                .await?
            {
                GrantOutcome::Applied(id) => println!("granted {credits} to {user} ({id})"),
                GrantOutcome::AlreadyApplied => {
                    println!("already granted earlier: nothing changed")
                }
                GrantOutcome::DryRun => println!("dry run: would grant {credits} to {user}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Generation { action } => match action {
            GenerationAction::Show { id } => {
                match admin.generation(GenerationId::parse(&id)?).await? {
                    Some(g) => {
                        println!(
                            "{} user={} status={} model={} n={} cost={} images={} refunded={} attempt={} created={} error={:?}",
                            g.id,
                            g.user_id,
                            g.status.as_str(),
                            g.model,
                            g.n,
                            g.cost,
                            g.images.len(),
                            g.refunded_credits,
                            g.attempt,
                            g.created_at,
                            g.error.map(|e| e.code)
                        );
                        Ok(ExitCode::SUCCESS)
                    }
                    None => anyhow::bail!("no generation {id}"),
                }
            }
            GenerationAction::Refund {
                id,
                reason,
                dry_run,
            } => {
                match admin
                    .refund_generation(GenerationId::parse(&id)?, &reason, dry_run)
                    .await?
                {
                    RefundOutcome::Refunded { credits } => {
                        println!("finished {id}, refunded {credits}")
                    }
                    RefundOutcome::WouldRefund { credits } => {
                        println!("dry run: would refund {credits}")
                    }
                    RefundOutcome::AlreadyFinished => {
                        println!("{id} is already finished: nothing changed")
                    }
                    RefundOutcome::NotFound => anyhow::bail!("no generation {id}"),
                }
                Ok(ExitCode::SUCCESS)
            }
        },
        Command::Dlq {
            action: DlqAction::Replay { max, dry_run },
        } => {
            let moved = admin.dlq_replay(max, dry_run).await?;
            println!("moved {moved} message(s) from the DLQ to the queue");
            Ok(ExitCode::SUCCESS)
        }
        Command::Events {
            action: EventsAction::List { limit },
        } => {
            let events = admin.held_events(limit).await?;
            for e in &events {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    e.kind.as_str(),
                    e.provider,
                    e.event_id,
                    e.event_type,
                    e.received_at,
                    e.reason
                );
            }
            println!("{} stored event(s)", events.len());
            Ok(ExitCode::SUCCESS)
        }
        Command::Events {
            action:
                EventsAction::Replay {
                    provider,
                    event_id,
                    user,
                    reason,
                    dry_run,
                },
        } => {
            let provider = Provider::parse(&provider)
                .ok_or_else(|| anyhow::anyhow!("provider must be stripe or creem"))?;
            let user = user.map(|u| UserId::parse(&u)).transpose()?;
            if dry_run {
                println!("dry run: would replay {provider} {event_id}");
                return Ok(ExitCode::SUCCESS);
            }
            match admin
                .replay_event(provider, &event_id, user, &reason)
                .await?
            {
                ReplayOutcome::Applied => println!("applied {event_id}"),
                ReplayOutcome::AlreadyApplied => {
                    println!("{event_id} was applied before: nothing changed")
                }
                ReplayOutcome::Ignored => println!("{event_id} moves nothing: removed"),
                ReplayOutcome::NotStored => {
                    println!("no stored event {event_id}: nothing to replay")
                }
                ReplayOutcome::StillUnattributed => {
                    anyhow::bail!("still no user for {event_id}: name one with --user")
                }
                ReplayOutcome::StillParked => anyhow::bail!(
                    "{event_id} still names a product no id is configured for: set it, then replay"
                ),
                ReplayOutcome::DeletedAccount => println!(
                    "{event_id} is for a deleted account: nothing applied (refund at the provider if due)"
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Webhooks {
            action: WebhooksAction::List { user },
        } => {
            let deliveries = admin.webhook_deliveries(UserId::parse(&user)?).await?;
            for d in &deliveries {
                println!(
                    "{} {} {:?} attempts={} id={} url={}",
                    d.generation_id,
                    d.event.as_str(),
                    d.state,
                    d.attempt_count,
                    d.webhook_id,
                    d.url
                );
                for a in &d.attempts {
                    println!("  {} {} {} ms", a.at, a.result, a.latency_ms);
                }
            }
            println!("{} deliver(ies)", deliveries.len());
            Ok(ExitCode::SUCCESS)
        }
        Command::Webhooks {
            action: WebhooksAction::Replay { generation, event },
        } => {
            let event = HookEvent::parse(&event)
                .ok_or_else(|| anyhow::anyhow!("event must be started or completed"))?;
            let queue = hooks_queue_url
                .ok_or_else(|| anyhow::anyhow!("set HOOKS_QUEUE_URL or --hooks-queue-url"))?;
            match admin
                .replay_webhook(GenerationId::parse(&generation)?, event, &queue)
                .await?
            {
                WebhookReplay::Sent => println!("sent {generation} {} again", event.as_str()),
                WebhookReplay::NotFound => {
                    anyhow::bail!("no {} delivery of {generation}", event.as_str())
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::User {
            action: UserAction::Show { who },
        } => match admin.user_report(&who).await? {
            Some(report) => {
                let u = report.user;
                println!(
                    "{} email={:?} name={:?} credits={} created={}",
                    u.id, u.email, u.name, u.credits, u.created_at
                );
                match &u.subscription {
                    Some(s) => println!("  subscription: {s:?}"),
                    None => println!("  subscription: none"),
                }
                for g in &report.grants {
                    let expires = g.expires_at.map_or_else(
                        || "never".to_string(),
                        |at| {
                            time::OffsetDateTime::from_unix_timestamp(at)
                                .map_or_else(|_| at.to_string(), |t| t.to_string())
                        },
                    );
                    println!(
                        "  grant {} {} ref={} granted={} left={} expired={} expires={expires}",
                        g.id, g.reason, g.reference, g.granted, g.left, g.expired
                    );
                }
                for row in report.recent_ledger {
                    println!(
                        "  {} {:+} {} ref={} at={}",
                        row.id, row.delta, row.reason, row.reference, row.created_at
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            None => anyhow::bail!("no user {who}"),
        },
        Command::Audit {
            action:
                AuditCommand::List {
                    user,
                    action,
                    since,
                },
        } => {
            let entries = admin
                .audit(UserId::parse(&user)?, action.as_deref(), since.as_deref())
                .await?;
            for e in &entries {
                println!(
                    "{} {} {} actor={} ip={} ua={:?} request={} detail={}",
                    e.created_at,
                    e.id,
                    e.action.as_str(),
                    e.actor,
                    e.ip.as_deref().unwrap_or("-"),
                    e.user_agent.as_deref().unwrap_or("-"),
                    e.request_id.as_deref().unwrap_or("-"),
                    e.detail
                );
            }
            println!("{} entries", entries.len());
            Ok(ExitCode::SUCCESS)
        }
    }
}
