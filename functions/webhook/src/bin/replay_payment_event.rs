//! The operator's command for payment events that could not be attributed to a user
//! (stored as `UNATTRIBUTED`, answered 200 and logged as errors):
//!
//! ```text
//! replay-payment-event list
//! replay-payment-event <stripe|creem> <event id> [usr_...]
//! ```
//!
//! A replay applies the stored event once through the same path as a delivery: with a user
//! id, to that user; without, by attribution again (metadata, then the customer mapping,
//! for example once a later checkout recorded the customer). Needs `TABLE_NAME` and the
//! usual AWS settings.

use shared::aws::dynamo::DynamoStore;
use shared::aws::dynamo::payments::EventOutcome;
use shared::domain::UserId;
use shared::payments::Provider;

const USAGE: &str =
    "usage: replay-payment-event list | replay-payment-event <stripe|creem> <event id> [usr_...]";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let table =
        std::env::var("TABLE_NAME").map_err(|_| anyhow::anyhow!("TABLE_NAME is not set"))?;
    let sdk = shared::aws::load_sdk_config().await;
    let store = DynamoStore::new(shared::aws::Clients::new(&sdk, None).dynamo, table);
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["list"] => {
            for event in store.unattributed_events(1000).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    event.provider,
                    event.event_id,
                    event.event_type,
                    event.received_at,
                    event.reason
                );
            }
            Ok(())
        }
        [provider, event_id, rest @ ..] if rest.len() <= 1 => {
            let provider = Provider::parse(provider).ok_or_else(|| anyhow::anyhow!(USAGE))?;
            let user = rest
                .first()
                .map(|u| UserId::parse(u).map_err(|_| anyhow::anyhow!("{u:?} is not a user id")))
                .transpose()?;
            let outcome = store.replay_event(provider, event_id, user).await?;
            println!("{provider} {event_id}: {outcome:?}");
            match outcome {
                EventOutcome::Applied | EventOutcome::Duplicate | EventOutcome::Ignored => Ok(()),
                EventOutcome::Unattributed => {
                    anyhow::bail!("still no user for {event_id}: name one as the third argument")
                }
            }
        }
        _ => anyhow::bail!(USAGE),
    }
}
