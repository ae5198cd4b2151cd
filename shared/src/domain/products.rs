//! The product catalog: what can be bought and how many credits it grants.

use serde::Serialize;

use super::Credits;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProductKind {
    OneTime,
    Subscription,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Interval {
    Month,
    Year,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Price {
    /// In minor units (cents).
    pub amount: u32,
    pub currency: &'static str,
}

/// Whether the credits of a product expire (the catalog's `credits_expire`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CreditsExpire {
    /// At the end of the period they were granted for (a subscription's default).
    PeriodEnd,
    /// Never (a pack's default).
    Never,
}

/// One product. Provider price ids map to `id` through configuration, never by amount.
#[derive(Debug, Serialize)]
pub struct Product {
    pub id: &'static str,
    pub name: &'static str,
    pub kind: ProductKind,
    pub interval: Option<Interval>,
    credits: u32,
    pub price: Price,
    pub credits_expire: CreditsExpire,
}

impl Product {
    /// Credits granted per purchase, or per paid period for a subscription.
    pub fn credits(&self) -> Credits {
        Credits::new(i64::from(self.credits)).expect("catalog grants are positive")
    }

    /// When credits granted for a period ending at `period_end` expire (unix seconds);
    /// `None`: never.
    pub fn expiry(&self, period_end: i64) -> Option<i64> {
        match (self.kind, self.credits_expire) {
            (ProductKind::Subscription, CreditsExpire::PeriodEnd) => Some(period_end),
            _ => None,
        }
    }
}

const fn usd(amount: u32) -> Price {
    Price {
        amount,
        currency: "usd",
    }
}

pub static PRODUCTS: &[Product] = &[
    Product {
        id: "credits_100",
        name: "100 credits",
        kind: ProductKind::OneTime,
        interval: None,
        credits: 100,
        price: usd(999),
        credits_expire: CreditsExpire::Never,
    },
    Product {
        id: "credits_500",
        name: "500 credits",
        kind: ProductKind::OneTime,
        interval: None,
        credits: 500,
        price: usd(3999),
        credits_expire: CreditsExpire::Never,
    },
    Product {
        id: "pro_monthly",
        name: "Pro, monthly",
        kind: ProductKind::Subscription,
        interval: Some(Interval::Month),
        credits: 600,
        price: usd(2999),
        credits_expire: CreditsExpire::PeriodEnd,
    },
    Product {
        id: "pro_yearly",
        name: "Pro, yearly",
        kind: ProductKind::Subscription,
        interval: Some(Interval::Year),
        credits: 7200,
        price: usd(29999),
        credits_expire: CreditsExpire::PeriodEnd,
    },
];

pub fn product(id: &str) -> Option<&'static Product> {
    PRODUCTS.iter().find(|p| p.id == id)
}
