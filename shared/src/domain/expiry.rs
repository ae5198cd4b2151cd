//! Credits that expire, as a pure function of the ledger (API.md, "Credits that expire";
//! invariant 10).
//!
//! The request path knows nothing of grants: it moves the one balance. What is left of
//! each grant is decided here, by replaying a user's ledger rows in order:
//! - a grant (a positive row that is not a refund or a restore) opens a bucket; it
//!   expires at its row's `expires_at`, or never;
//! - spending (a generation's charge, an operator's negative correction) takes from the
//!   bucket that expires soonest first (then the older), the never-expiring ones last, and
//!   beyond them (only a claw-back may) into debt;
//! - a claw-back takes from the grant it claws back first, then as spending does; an
//!   `expired` row takes from its grant the same way;
//! - a refund goes back to the buckets its charge was taken from, the last taken first; a
//!   restore (a won dispute) goes back to the grant it restores; any credit coming in pays
//!   debt first;
//! - a grant whose `expires_at` has come with something left is due: one `expired` row of
//!   what is left (never more than the balance). Credits returned to a grant after its
//!   expiry are due again at once.
//!
//! The state after a prefix of the ledger is a value ([`Replay`]) that the expiry step keeps
//! as a checkpoint, so a replay reads only the rows since the last expiry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ledger::LedgerReason;

/// A refund later than this after its charge goes back to no grant (it opens a
/// never-expiring one): the charges a checkpoint keeps are bounded by it (at the rate
/// limit's 10 a minute, 600 charges, some 60 KB of a 400 KB item). Generations finish,
/// or are finished by the sweeper, within their deadline (15 minutes by default).
pub const REFUND_HORIZON_SECS: i64 = 3600;

/// One ledger row, as the replay reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The row's id (`led_…`): its position, and the `ref` of an `expired` row.
    pub id: String,
    pub delta: i64,
    pub reason: LedgerReason,
    pub reference: String,
    /// Unix seconds.
    pub at: i64,
    /// A grant's (or a restore's) expiry, unix seconds.
    pub expires_at: Option<i64>,
    /// For a claw-back or a restore: the reference of the grant it acts on.
    pub source: Option<String>,
}

/// What is left of one grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantLeft {
    /// The grant's ledger row.
    pub id: String,
    pub reason: LedgerReason,
    pub reference: String,
    pub granted: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    pub left: i64,
    /// Taken by `expired` rows so far.
    #[serde(default)]
    pub expired: i64,
}

impl GrantLeft {
    fn burn_order(&self) -> i64 {
        self.expires_at.unwrap_or(i64::MAX)
    }

    /// A grant a claw-back or a restore may name.
    fn paid(&self) -> bool {
        matches!(
            self.reason,
            LedgerReason::Purchase | LedgerReason::Subscription
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Take {
    /// The grant's row id; `None`: taken into debt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    grant: Option<String>,
    amount: i64,
    /// Given back by refunds so far.
    #[serde(default)]
    returned: i64,
}

/// A generation's charge, while a refund may still come for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Charge {
    at: i64,
    takes: Vec<Take>,
}

/// An `expired` row due now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The grant's row id: the `expired` row's `ref`.
    pub grant: String,
    pub credits: i64,
    pub expires_at: i64,
}

/// A recorded `expired` row compared with what the replay says was left of its grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiryCheck {
    pub row: String,
    pub grant: String,
    pub recorded: i64,
    pub expected: i64,
}

/// The state after replaying a prefix of a user's ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replay {
    grants: Vec<GrantLeft>,
    #[serde(default)]
    debt: i64,
    #[serde(default)]
    charges: BTreeMap<String, Charge>,
    /// The last row replayed: the next replay reads the rows after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub through: Option<String>,
}

impl Replay {
    /// The balance the replayed rows sum to.
    pub fn balance(&self) -> i64 {
        self.grants.iter().map(|g| g.left).sum::<i64>() - self.debt
    }

    /// The grants kept, in ledger order, with what is left of each.
    pub fn grants(&self) -> &[GrantLeft] {
        &self.grants
    }

    /// Replays every row, in ledger order.
    pub fn of(rows: impl IntoIterator<Item = Row>) -> (Self, Vec<ExpiryCheck>) {
        let mut replay = Self::default();
        let checks = rows.into_iter().filter_map(|r| replay.apply(&r)).collect();
        (replay, checks)
    }

    /// Applies one row; for an `expired` row, says what it took against what it should have.
    pub fn apply(&mut self, row: &Row) -> Option<ExpiryCheck> {
        self.through = Some(row.id.clone());
        let amount = row.delta.abs();
        match row.reason {
            _ if row.delta == 0 => None,
            LedgerReason::Expired => {
                let index = self.grants.iter().position(|g| g.id == row.reference);
                let expected = index.map_or(0, |i| {
                    let grant = &self.grants[i];
                    if grant.expires_at.is_some_and(|at| at <= row.at) {
                        grant.left.min(self.balance().max(0))
                    } else {
                        0
                    }
                });
                self.take(amount, index);
                if let Some(i) = index {
                    self.grants[i].expired += amount;
                }
                Some(ExpiryCheck {
                    row: row.id.clone(),
                    grant: row.reference.clone(),
                    recorded: amount,
                    expected,
                })
            }
            _ if row.delta < 0 => {
                let preferred = match row.reason {
                    LedgerReason::Clawback => self.paid_grant(row),
                    _ => None,
                };
                let takes = self.take(amount, preferred);
                if row.reason == LedgerReason::Generation {
                    self.charges
                        .insert(row.reference.clone(), Charge { at: row.at, takes });
                }
                None
            }
            LedgerReason::Refund => {
                let rest = self.refund(row, amount);
                if rest > 0 {
                    self.open(row, rest);
                }
                None
            }
            _ => {
                let restores = match row.reason {
                    LedgerReason::Purchase => self.paid_grant(row),
                    _ => None,
                };
                match restores {
                    Some(i) => self.give(i, amount),
                    None => self.open(row, amount),
                }
                None
            }
        }
    }

    /// The grant a claw-back or a restore acts on: the one its `source` names, else (rows
    /// written before `source` existed) a paid grant with the same reference.
    fn paid_grant(&self, row: &Row) -> Option<usize> {
        let name = row.source.as_deref().unwrap_or(&row.reference);
        self.grants
            .iter()
            .position(|g| g.paid() && g.reference == name && g.id != row.id)
    }

    fn open(&mut self, row: &Row, amount: i64) {
        let paid = amount.min(self.debt);
        self.debt -= paid;
        self.grants.push(GrantLeft {
            id: row.id.clone(),
            reason: row.reason,
            reference: row.reference.clone(),
            granted: amount,
            expires_at: row.expires_at,
            left: amount - paid,
            expired: 0,
        });
    }

    fn give(&mut self, index: usize, amount: i64) {
        let paid = amount.min(self.debt);
        self.debt -= paid;
        self.grants[index].left += amount - paid;
    }

    /// Takes `amount` from `preferred` first, then soonest-expiring first, then into debt.
    fn take(&mut self, amount: i64, preferred: Option<usize>) -> Vec<Take> {
        let mut order: Vec<usize> = (0..self.grants.len())
            .filter(|&i| Some(i) != preferred && self.grants[i].left > 0)
            .collect();
        order.sort_by_key(|&i| (self.grants[i].burn_order(), i));
        let mut rest = amount;
        let mut takes = Vec::new();
        for i in preferred.into_iter().chain(order) {
            let grant = &mut self.grants[i];
            let taken = rest.min(grant.left.max(0));
            if taken > 0 {
                grant.left -= taken;
                rest -= taken;
                takes.push(Take {
                    grant: Some(grant.id.clone()),
                    amount: taken,
                    returned: 0,
                });
            }
            if rest == 0 {
                break;
            }
        }
        if rest > 0 {
            self.debt += rest;
            takes.push(Take {
                grant: None,
                amount: rest,
                returned: 0,
            });
        }
        takes
    }

    /// Gives a refund back to the buckets its charge came from, the last taken first; what
    /// the charge does not account for is returned.
    fn refund(&mut self, row: &Row, amount: i64) -> i64 {
        let Some(mut charge) = self.charges.remove(&row.reference) else {
            return amount;
        };
        if row.at - charge.at > REFUND_HORIZON_SECS {
            return amount;
        }
        let mut rest = amount;
        for take in charge.takes.iter_mut().rev() {
            let back = rest.min(take.amount - take.returned);
            if back <= 0 {
                continue;
            }
            take.returned += back;
            rest -= back;
            match take
                .grant
                .as_ref()
                .and_then(|id| self.grants.iter().position(|g| &g.id == id))
            {
                Some(i) => self.give(i, back),
                None => {
                    // Taken into debt (or from a grant no longer kept): it pays debt,
                    // and what debt does not need opens a never-expiring bucket.
                    let paid = back.min(self.debt);
                    self.debt -= paid;
                    if back > paid {
                        self.open(
                            &Row {
                                expires_at: None,
                                ..row.clone()
                            },
                            back - paid,
                        );
                    }
                }
            }
            if rest == 0 {
                break;
            }
        }
        self.charges.insert(row.reference.clone(), charge);
        rest
    }

    /// The `expired` rows due at `now`: what is left of each grant whose expiry has come,
    /// never more than the balance.
    pub fn due(&self, now: i64) -> Vec<Due> {
        let mut balance = self.balance().max(0);
        let mut due: Vec<&GrantLeft> = self
            .grants
            .iter()
            .filter(|g| g.left > 0 && g.expires_at.is_some_and(|at| at <= now))
            .collect();
        due.sort_by_key(|g| g.burn_order());
        due.into_iter()
            .filter_map(|g| {
                let credits = g.left.min(balance);
                balance -= credits;
                (credits > 0).then(|| Due {
                    grant: g.id.clone(),
                    credits,
                    expires_at: g.expires_at.expect("filtered on an expiry"),
                })
            })
            .collect()
    }

    /// What will expire and when, soonest first: the credits left on expiring grants,
    /// summed per expiry time.
    pub fn expiring(&self) -> Vec<(i64, i64)> {
        let mut by_time: BTreeMap<i64, i64> = BTreeMap::new();
        for grant in &self.grants {
            if let (Some(at), true) = (grant.expires_at, grant.left > 0) {
                *by_time.entry(at).or_default() += grant.left;
            }
        }
        by_time.into_iter().collect()
    }

    /// Whether a refund may still come that gives credits back to a grant whose expiry has
    /// passed (so the expiry step must look at this user again at its next run).
    pub fn refund_may_reopen(&self, now: i64) -> bool {
        self.charges.values().any(|charge| {
            now - charge.at <= REFUND_HORIZON_SECS
                && charge.takes.iter().any(|take| {
                    take.returned < take.amount
                        && take.grant.as_ref().is_some_and(|id| {
                            self.grants
                                .iter()
                                .any(|g| &g.id == id && g.expires_at.is_some_and(|at| at <= now))
                        })
                })
        })
    }

    /// Whether any grant still has credits that will expire.
    pub fn has_expiring(&self) -> bool {
        self.grants
            .iter()
            .any(|g| g.expires_at.is_some() && g.left > 0)
    }

    /// Drops what no later row can touch: charges past the refund horizon, and buckets that
    /// are empty, not a paid grant (which a claw-back or restore may name) and not named by
    /// a kept charge. A replay from the start and one from the pruned state then agree.
    pub fn prune(&mut self, now: i64) {
        self.charges
            .retain(|_, charge| now - charge.at <= REFUND_HORIZON_SECS);
        let named: std::collections::BTreeSet<&str> = self
            .charges
            .values()
            .flat_map(|c| c.takes.iter().filter_map(|t| t.grant.as_deref()))
            .collect();
        let keep: Vec<bool> = self
            .grants
            .iter()
            .map(|g| g.left != 0 || g.paid() || named.contains(g.id.as_str()))
            .collect();
        let mut keep = keep.into_iter();
        self.grants.retain(|_| keep.next().unwrap_or(true));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(n: u32, delta: i64, reason: LedgerReason, reference: &str) -> Row {
        Row {
            id: format!("r{n:04}"),
            delta,
            reason,
            reference: reference.into(),
            at: i64::from(n),
            expires_at: None,
            source: None,
        }
    }

    fn expiring(mut r: Row, at: i64) -> Row {
        r.expires_at = Some(at);
        r
    }

    #[test]
    fn spending_takes_the_soonest_expiring_credits_first_and_the_rest_expires() {
        let (replay, _) = Replay::of([
            row(1, 100, LedgerReason::Purchase, "pi_1"),
            expiring(row(2, 600, LedgerReason::Subscription, "sub#1"), 50),
            row(3, -450, LedgerReason::Generation, "gen_1"),
        ]);
        assert_eq!(
            replay.due(50),
            vec![Due {
                grant: "r0002".into(),
                credits: 150,
                expires_at: 50
            }]
        );
        assert_eq!(replay.due(49), vec![]);
        assert_eq!(replay.expiring(), vec![(50, 150)]);
    }

    #[test]
    fn a_refund_after_the_expiry_is_due_again_at_once() {
        let (mut replay, _) = Replay::of([
            expiring(row(1, 10, LedgerReason::Subscription, "sub#1"), 5),
            row(2, -4, LedgerReason::Generation, "gen_1"),
            row(7, -6, LedgerReason::Expired, "r0001"),
        ]);
        assert!(replay.refund_may_reopen(8));
        replay.apply(&row(8, 4, LedgerReason::Refund, "gen_1"));
        assert_eq!(replay.due(8)[0].credits, 4);
        assert_eq!(replay.balance(), 4);
    }

    #[test]
    fn a_claw_back_takes_from_its_grant_and_a_won_dispute_restores_it_with_its_expiry() {
        let (mut replay, _) = Replay::of([
            row(1, 50, LedgerReason::Admin, "ops"),
            expiring(row(2, 600, LedgerReason::Subscription, "sub#1"), 100),
            Row {
                source: Some("sub#1".into()),
                ..row(3, -600, LedgerReason::Clawback, "pi_9")
            },
        ]);
        assert_eq!(replay.due(100), vec![]);
        assert_eq!(replay.balance(), 50);
        replay.apply(&Row {
            source: Some("sub#1".into()),
            ..expiring(row(4, 600, LedgerReason::Purchase, "pi_9"), 100)
        });
        assert_eq!(replay.due(100)[0].credits, 600);
    }

    #[test]
    fn an_expiry_never_takes_more_than_the_balance() {
        let (replay, _) = Replay::of([
            expiring(row(1, 600, LedgerReason::Subscription, "sub#1"), 10),
            row(2, -100, LedgerReason::Admin, "ops"),
        ]);
        assert_eq!(replay.due(10)[0].credits, 500);
    }

    #[test]
    fn a_pruned_checkpoint_replays_like_the_whole_ledger() {
        let rows = [
            row(1, 10, LedgerReason::SignupBonus, "u"),
            expiring(row(2, 600, LedgerReason::Subscription, "sub#1"), 50),
            row(3, -12, LedgerReason::Generation, "gen_1"),
            row(4, 12, LedgerReason::Refund, "gen_1"),
        ];
        let (whole, _) = Replay::of(rows.clone());
        let (mut pruned, _) = Replay::of(rows);
        pruned.prune(4);
        let json = serde_json::to_string(&pruned).unwrap();
        let back: Replay = serde_json::from_str(&json).unwrap();
        assert_eq!(back.due(60), whole.due(60));
        assert_eq!(back.balance(), whole.balance());
    }
}
