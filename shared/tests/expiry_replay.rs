//! The expiry replay against a simple reference model: every credit a coin that knows its
//! grant, spending picks coins one by one (its own grant's for a claw-back, then the
//! soonest-expiring, then the never-expiring), a charge remembers the coins it took and a
//! refund gives them back last-taken first. Random sequences of grants (expiring and
//! not), debits, refunds, claw-backs and expiries: after each step the balance equals the
//! sum of the ledger, no grant expires more than is left of it, and what expires is what
//! the model says.

use std::collections::BTreeMap;

use proptest::prelude::*;
use shared::domain::expiry::{Replay, Row};
use shared::domain::ledger::LedgerReason;

#[derive(Debug, Clone)]
enum Op {
    /// Credits, and whether (and how many steps later) they expire, and whether paid.
    Grant(i64, Option<i64>, bool),
    Debit(i64),
    /// A share (in percent) of what is left to refund of the charge picked by index.
    Refund(usize, u8),
    /// Credits taken back from the paid grant picked by index.
    Clawback(usize, i64),
    Sweep,
    Tick(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1i64..300, prop::option::of(1i64..20), any::<bool>()).prop_map(|(n, e, p)| Op::Grant(n, e, p)),
        4 => (1i64..120).prop_map(Op::Debit),
        2 => (any::<usize>(), 1u8..=100).prop_map(|(c, p)| Op::Refund(c, p)),
        1 => (any::<usize>(), 1i64..400).prop_map(|(g, n)| Op::Clawback(g, n)),
        2 => Just(Op::Sweep),
        2 => (1i64..10).prop_map(Op::Tick),
    ]
}

/// A unit taken: from a grant (by index), or into debt.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Unit {
    Grant(usize),
    Debt,
}

#[derive(Default)]
struct Model {
    /// Per grant: expiry, and coins left.
    grants: Vec<(Option<i64>, i64)>,
    debt: i64,
    /// Per charge: the units taken, in order, and how many of them were given back.
    charges: Vec<(Vec<Unit>, usize)>,
}

impl Model {
    fn balance(&self) -> i64 {
        self.grants.iter().map(|g| g.1).sum::<i64>() - self.debt
    }

    fn inflow(&mut self, grant: usize, n: i64) {
        for _ in 0..n {
            if self.debt > 0 {
                self.debt -= 1;
            } else {
                self.grants[grant].1 += 1;
            }
        }
    }

    fn take_one(&mut self, preferred: Option<usize>) -> Unit {
        if let Some(g) = preferred.filter(|&g| self.grants[g].1 > 0) {
            self.grants[g].1 -= 1;
            return Unit::Grant(g);
        }
        let best = (0..self.grants.len())
            .filter(|&g| self.grants[g].1 > 0)
            .min_by_key(|&g| (self.grants[g].0.unwrap_or(i64::MAX), g));
        match best {
            Some(g) => {
                self.grants[g].1 -= 1;
                Unit::Grant(g)
            }
            None => {
                self.debt += 1;
                Unit::Debt
            }
        }
    }

    /// Grants due at `now` (expiry order), each with what it loses.
    fn due(&self, now: i64) -> Vec<(usize, i64)> {
        let mut balance = self.balance().max(0);
        let mut due: Vec<usize> = (0..self.grants.len())
            .filter(|&g| self.grants[g].1 > 0 && self.grants[g].0.is_some_and(|at| at <= now))
            .collect();
        due.sort_by_key(|&g| (self.grants[g].0, g));
        due.into_iter()
            .filter_map(|g| {
                let n = self.grants[g].1.min(balance);
                balance -= n;
                (n > 0).then_some((g, n))
            })
            .collect()
    }
}

struct Ledger {
    rows: Vec<Row>,
    replay: Replay,
    /// Ledger row id of each model grant.
    grant_rows: Vec<String>,
    /// The grant ids the replay opened for refunds of debt (never expiring).
    now: i64,
}

impl Ledger {
    fn push(&mut self, delta: i64, reason: LedgerReason, reference: &str) -> Row {
        let row = Row {
            id: format!("led_{:06}", self.rows.len()),
            delta,
            reason,
            reference: reference.into(),
            at: self.now,
            expires_at: None,
            source: None,
        };
        self.rows.push(row.clone());
        row
    }

    fn apply(&mut self, row: Row) {
        *self.rows.last_mut().expect("pushed") = row.clone();
        let check = self.replay.apply(&row);
        if let Some(check) = check {
            assert_eq!(
                check.recorded, check.expected,
                "an expiry the replay does not give"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn the_replay_expires_what_the_coin_model_says(ops in prop::collection::vec(op(), 1..60)) {
        let mut model = Model::default();
        let mut ledger = Ledger { rows: Vec::new(), replay: Replay::default(), grant_rows: Vec::new(), now: 100 };
        let mut paid: Vec<usize> = Vec::new();
        let mut charge_refs: Vec<String> = Vec::new();
        let mut refund_grants = 0usize;
        for op in ops {
            match op {
                Op::Grant(n, expires, is_paid) => {
                    let expires_at = expires.map(|e| ledger.now + e);
                    let reason = match (expires_at, is_paid) {
                        (Some(_), _) => LedgerReason::Subscription,
                        (None, true) => LedgerReason::Purchase,
                        (None, false) => LedgerReason::Admin,
                    };
                    let reference = format!("g{}", model.grants.len());
                    let mut row = ledger.push(n, reason, &reference);
                    row.expires_at = expires_at;
                    ledger.grant_rows.push(row.id.clone());
                    if reason != LedgerReason::Admin {
                        paid.push(model.grants.len());
                    }
                    model.grants.push((expires_at, 0));
                    let g = model.grants.len() - 1;
                    model.inflow(g, n);
                    ledger.apply(row);
                }
                Op::Debit(n) => {
                    // Covered, as the request path's conditional debit is.
                    if model.balance() < n { continue; }
                    let reference = format!("gen_{}", charge_refs.len());
                    let units = (0..n).map(|_| model.take_one(None)).collect();
                    model.charges.push((units, 0));
                    charge_refs.push(reference.clone());
                    let row = ledger.push(-n, LedgerReason::Generation, &reference);
                    ledger.apply(row);
                }
                Op::Refund(pick, percent) => {
                    if model.charges.is_empty() { continue; }
                    let c = pick % model.charges.len();
                    let (units, returned) = model.charges[c].clone();
                    let open = units.len() - returned;
                    let n = (open * usize::from(percent)).div_ceil(100);
                    if n == 0 { continue; }
                    for unit in units[..units.len() - returned].iter().rev().take(n) {
                        match *unit {
                            Unit::Grant(g) => model.inflow(g, 1),
                            Unit::Debt => {
                                if model.debt > 0 { model.debt -= 1 } else {
                                    model.grants.push((None, 1));
                                    refund_grants += 1;
                                }
                            }
                        }
                    }
                    model.charges[c].1 += n;
                    let row = ledger.push(n as i64, LedgerReason::Refund, &charge_refs[c]);
                    ledger.apply(row);
                }
                Op::Clawback(pick, n) => {
                    if paid.is_empty() { continue; }
                    let g = paid[pick % paid.len()];
                    for _ in 0..n { model.take_one(Some(g)); }
                    let mut row = ledger.push(-n, LedgerReason::Clawback, "pi");
                    row.source = Some(format!("g{g}"));
                    ledger.apply(row);
                }
                Op::Sweep => {
                    let expected = model.due(ledger.now);
                    let due = ledger.replay.due(ledger.now);
                    let got: Vec<(String, i64)> = due.iter().map(|d| (d.grant.clone(), d.credits)).collect();
                    let want: Vec<(String, i64)> = expected.iter().map(|&(g, n)| (ledger.grant_rows[g].clone(), n)).collect();
                    prop_assert_eq!(&got, &want);
                    for d in due {
                        let left = ledger.replay.grants().iter().find(|g| g.id == d.grant).map(|g| g.left);
                        prop_assert!(Some(d.credits) <= left, "expires more than is left");
                        let row = ledger.push(-d.credits, LedgerReason::Expired, &d.grant);
                        ledger.apply(row);
                    }
                    for (g, n) in expected {
                        model.grants[g].1 -= n;
                    }
                }
                Op::Tick(t) => ledger.now += t,
            }
            let sum: i64 = ledger.rows.iter().map(|r| r.delta).sum();
            prop_assert_eq!(ledger.replay.balance(), sum);
            prop_assert_eq!(model.balance(), sum);
            // What is left of each grant, grant by grant.
            let left: BTreeMap<&str, i64> = ledger.replay.grants().iter().map(|g| (g.id.as_str(), g.left)).collect();
            for (g, id) in ledger.grant_rows.iter().enumerate() {
                prop_assert_eq!(left.get(id.as_str()).copied().unwrap_or(0), model.grants[g].1, "grant {}", g);
            }
            let _ = refund_grants;
            // A checkpoint (pruned, through JSON) replays on exactly as the whole ledger.
            let mut checkpoint = ledger.replay.clone();
            checkpoint.prune(ledger.now);
            let checkpoint: Replay = serde_json::from_str(&serde_json::to_string(&checkpoint).unwrap()).unwrap();
            prop_assert_eq!(checkpoint.balance(), ledger.replay.balance());
            prop_assert_eq!(checkpoint.due(ledger.now + 30), ledger.replay.due(ledger.now + 30));
            let (whole, checks) = Replay::of(ledger.rows.iter().cloned());
            prop_assert!(checks.iter().all(|c| c.recorded == c.expected));
            prop_assert_eq!(whole.due(ledger.now + 30), ledger.replay.due(ledger.now + 30));
        }
    }
}
