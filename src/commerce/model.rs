//! The commerce domain as clients see it: orders, products, notifications, and the two scalars
//! whose wire format clients rely on (`DateTime`, `Decimal`; see `docs/contract.md`).
//!
//! These types are shared by the store, the broker's events, the GraphQL schema and the room
//! channel, so that an order serialises the same way wherever it travels.

use std::fmt;
use std::str::FromStr;

use async_graphql::{
    ComplexObject, Enum, ID, InputValueError, InputValueResult, Scalar, ScalarType, SimpleObject, Value,
};
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};

/// A point in time, on the wire as RFC 3339 in UTC with milliseconds: `2026-01-25T10:30:00.000Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub DateTime<Utc>);

impl Timestamp {
    /// Now, truncated to milliseconds so that what is stored is what is sent.
    pub fn now() -> Self {
        Self(Utc::now().trunc_subsecs(3))
    }
}

impl fmt::Display for Timestamp {
    /// `2026-01-25T10:30:00.000Z`, written digit by digit: every event payload carries
    /// timestamps, and chrono's format-string machinery cost about 30k instructions per mutation
    /// (measured with callgrind), more than the rest of serialising the event.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use chrono::{Datelike, Timelike};
        let (date, time) = (self.0.date_naive(), self.0.time());
        let year = date.year();
        if !(0..=9999).contains(&year) {
            return write!(f, "{}", self.0.format("%Y-%m-%dT%H:%M:%S%.3fZ"));
        }
        let millis = (time.nanosecond() / 1_000_000).min(999);
        let mut out = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, digits: usize, mut value: u32| {
            for i in (0..digits).rev() {
                out[at + i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, year as u32);
        put(5, 2, date.month());
        put(8, 2, date.day());
        put(11, 2, time.hour());
        put(14, 2, time.minute());
        put(17, 2, time.second().min(59));
        put(20, 3, millis);
        f.write_str(std::str::from_utf8(&out).expect("ASCII digits"))
    }
}

impl FromStr for Timestamp {
    type Err = chrono::ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(DateTime::parse_from_rfc3339(s)?.with_timezone(&Utc)))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[Scalar(name = "DateTime")]
impl ScalarType for Timestamp {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(s) => s.parse().map_err(|_| InputValueError::custom("expected an RFC 3339 date-time")),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.to_string())
    }
}

/// An exact amount, on the wire as a string that keeps the scale it was given (`"12.50"`).
/// Never a float: a JSON number with a fraction is refused rather than rounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decimal(pub rust_decimal::Decimal);

impl Decimal {
    pub fn is_negative(&self) -> bool {
        self.0.is_sign_negative() && !self.0.is_zero()
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for Decimal {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s.strip_prefix('-').unwrap_or(s);
        let plain = !digits.is_empty()
            && digits.split_once('.').map_or(digits.bytes().all(|b| b.is_ascii_digit()), |(whole, frac)| {
                !whole.is_empty()
                    && !frac.is_empty()
                    && whole.bytes().all(|b| b.is_ascii_digit())
                    && frac.bytes().all(|b| b.is_ascii_digit())
            });
        if !plain {
            return Err(format!("{s:?} is not a decimal amount like \"12.50\""));
        }
        rust_decimal::Decimal::from_str_exact(s)
            .map(Self)
            .map_err(|_| format!("{s:?} has too many digits for an amount"))
    }
}

impl Serialize for Decimal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Decimal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[Scalar(name = "Decimal")]
impl ScalarType for Decimal {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(s) => s.trim().parse().map_err(InputValueError::custom),
            // An integer is exact; a number with a fraction may already have been rounded.
            Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string().parse().map_err(InputValueError::custom),
            Value::Number(_) => Err(InputValueError::custom("send amounts as strings, such as \"12.50\"")),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.to_string())
    }
}

macro_rules! text_enum {
    ($name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Enum, Serialize, Deserialize)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s { $($text => Ok(Self::$variant),)+ _ => Err(format!("unknown {} {s:?}", stringify!($name))) }
            }
        }
    };
}

text_enum!(OrderStatus {
    Pending => "PENDING",
    Processing => "PROCESSING",
    Shipped => "SHIPPED",
    Delivered => "DELIVERED",
    Cancelled => "CANCELLED",
});

text_enum!(PaymentStatus {
    Pending => "PENDING",
    Paid => "PAID",
    Failed => "FAILED",
    Refunded => "REFUNDED",
});

text_enum!(OrderEventKind {
    Created => "CREATED",
    Updated => "UPDATED",
    Deleted => "DELETED",
});

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, SimpleObject)]
#[serde(rename_all = "camelCase")]
#[graphql(complex)]
pub struct Order {
    #[graphql(skip)]
    #[serde(with = "id_string")]
    pub id: i64,
    pub order_number: String,
    #[graphql(skip)]
    pub customer_id: String,
    pub status: OrderStatus,
    pub payment_status: PaymentStatus,
    pub total: Decimal,
    pub currency: String,
    pub tracking_number: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[ComplexObject]
impl Order {
    #[graphql(name = "id")]
    async fn gql_id(&self) -> ID {
        ID(self.id.to_string())
    }

    #[graphql(name = "customerId")]
    async fn gql_customer_id(&self) -> ID {
        ID(self.customer_id.clone())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, SimpleObject)]
#[serde(rename_all = "camelCase")]
#[graphql(complex)]
pub struct Product {
    #[graphql(skip)]
    #[serde(with = "id_string")]
    pub id: i64,
    pub sku: String,
    pub name: String,
    pub price: Decimal,
    pub quantity: i32,
    pub updated_at: Timestamp,
}

#[ComplexObject]
impl Product {
    #[graphql(name = "id")]
    async fn gql_id(&self) -> ID {
        ID(self.id.to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, SimpleObject)]
#[serde(rename_all = "camelCase")]
#[graphql(complex)]
pub struct Notification {
    #[graphql(skip)]
    #[serde(with = "id_string")]
    pub id: i64,
    #[graphql(skip)]
    pub user_id: String,
    #[serde(rename = "type")]
    #[graphql(name = "type")]
    pub kind: String,
    pub title: String,
    pub message: String,
    pub read: bool,
    pub created_at: Timestamp,
}

#[ComplexObject]
impl Notification {
    #[graphql(name = "id")]
    async fn gql_id(&self) -> ID {
        ID(self.id.to_string())
    }

    #[graphql(name = "userId")]
    async fn gql_user_id(&self) -> ID {
        ID(self.user_id.clone())
    }
}

/// One person in a room: however many tabs they have open there, one entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, SimpleObject)]
#[serde(rename_all = "camelCase")]
pub struct PresenceUser {
    pub user_id: ID,
    pub name: Option<String>,
    /// Their connections in the room.
    pub connections: i32,
    pub joined_at: Timestamp,
    pub is_typing: bool,
    pub typing_field: Option<String>,
}

/// Entity ids are `ID`s, strings on the wire, in serde as in GraphQL: the room channel sends
/// these types through serde (`order_update`, `inventory_update`) and must say what the GraphQL
/// subscriptions say. A number is still accepted when reading.
mod id_string {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(id: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(id)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Number(i64),
            Text(String),
        }
        match Repr::deserialize(d)? {
            Repr::Number(n) => Ok(n),
            Repr::Text(s) => s.parse().map_err(D::Error::custom),
        }
    }
}

/// Parses a client-given id; ids are positive integers, anything else names nothing.
pub fn parse_id(id: &str) -> Option<i64> {
    id.trim().parse().ok().filter(|n: &i64| *n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_print_as_rfc3339_utc_with_milliseconds() {
        for text in ["2026-01-25T10:30:00.000Z", "1999-12-31T23:59:59.999Z", "2026-11-30T02:05:07.042Z"] {
            let t: Timestamp = text.parse().unwrap();
            assert_eq!(t.to_string(), text);
            assert_eq!(t.to_string(), t.0.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string());
        }
        let now = Timestamp::now();
        assert_eq!(now.to_string(), now.0.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string());
    }

    #[test]
    fn decimal_keeps_scale() {
        for s in ["12.50", "0.00", "99.99", "100", "-3.1"] {
            assert_eq!(s.parse::<Decimal>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn decimal_refuses_what_is_not_an_amount() {
        for s in ["", "abc", "1e5", "1.", ".5", "1,00", "NaN", "--1", "1.2.3", "99999999999999999999999999999999"] {
            assert!(s.parse::<Decimal>().is_err(), "{s}");
        }
    }

    #[test]
    fn ids_serialise_as_strings_like_graphql_ids() {
        let product = Product {
            id: 7,
            sku: "S".into(),
            name: "N".into(),
            price: "1.00".parse().unwrap(),
            quantity: 1,
            updated_at: Timestamp::now(),
        };
        let json = serde_json::to_value(&product).unwrap();
        assert_eq!(json["id"], "7");
        assert_eq!(serde_json::from_value::<Product>(json).unwrap(), product);
        let mut numeric = serde_json::to_value(&product).unwrap();
        numeric["id"] = 7.into();
        assert_eq!(serde_json::from_value::<Product>(numeric).unwrap().id, 7);
    }

    #[test]
    fn timestamp_has_milliseconds_and_z() {
        let t: Timestamp = "2026-01-25T10:30:00Z".parse().unwrap();
        assert_eq!(t.to_string(), "2026-01-25T10:30:00.000Z");
    }
}
