//! Credit amounts.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A positive number of credits to move (a price, a grant, a refund). A balance, which a
/// claw-back may take below zero, is a plain `i64`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Credits(u32);

/// The amount was zero, negative or too large to be a credit movement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a credit amount must be between 1 and {max}", max = Credits::MAX)]
pub struct InvalidCredits;

impl Credits {
    /// No single movement exceeds this (a year of the largest plan is 7,200).
    pub const MAX: u32 = 1_000_000;

    pub fn new(amount: i64) -> Result<Self, InvalidCredits> {
        match u32::try_from(amount) {
            Ok(value) if (1..=Self::MAX).contains(&value) => Ok(Self(value)),
            _ => Err(InvalidCredits),
        }
    }

    pub fn get(self) -> i64 {
        i64::from(self.0)
    }

    /// `self × n`, for pricing `n` images.
    pub fn times(self, n: u32) -> Result<Self, InvalidCredits> {
        Self::new(self.get() * i64::from(n))
    }
}

impl TryFrom<i64> for Credits {
    type Error = InvalidCredits;
    fn try_from(value: i64) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Credits> for i64 {
    fn from(value: Credits) -> Self {
        value.get()
    }
}

impl fmt::Display for Credits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for Credits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credits({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_and_negative_amounts_are_not_credits() {
        assert!(Credits::new(0).is_err());
        assert!(Credits::new(-3).is_err());
        assert!(Credits::new(i64::from(Credits::MAX) + 1).is_err());
        assert_eq!(Credits::new(5).map(Credits::get), Ok(5));
    }
}
