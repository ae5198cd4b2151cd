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

/// One product. Provider price ids map to `id` through configuration, never by amount.
#[derive(Debug, Serialize)]
pub struct Product {
    pub id: &'static str,
    pub name: &'static str,
    pub kind: ProductKind,
    pub interval: Option<Interval>,
    credits: u32,
    pub price: Price,
}

impl Product {
    /// Credits granted per purchase, or per paid period for a subscription.
    pub fn credits(&self) -> Credits {
        Credits::new(i64::from(self.credits)).expect("catalog grants are positive")
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
    },
    Product {
        id: "credits_500",
        name: "500 credits",
        kind: ProductKind::OneTime,
        interval: None,
        credits: 500,
        price: usd(3999),
    },
    Product {
        id: "pro_monthly",
        name: "Pro, monthly",
        kind: ProductKind::Subscription,
        interval: Some(Interval::Month),
        credits: 600,
        price: usd(2999),
    },
    Product {
        id: "pro_yearly",
        name: "Pro, yearly",
        kind: ProductKind::Subscription,
        interval: Some(Interval::Year),
        credits: 7200,
        price: usd(29999),
    },
];

pub fn product(id: &str) -> Option<&'static Product> {
    PRODUCTS.iter().find(|p| p.id == id)
}
