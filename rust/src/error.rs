//! One error type for the whole core. Every message is a single line that names
//! the offending field and, where there is one, the allowed range.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A field is missing, negative, zero where it must be positive, or out of range.
    InvalidField { field: String, value: String, allowed: String },
    /// An intermediate quantity no longer fits in 64 bits.
    Overflow { what: String },
    /// The input could not be decoded at all (bad JSON, wrong type).
    Decode { message: String },
}

impl Error {
    pub fn field(field: impl Into<String>, value: impl fmt::Display, allowed: impl Into<String>) -> Self {
        Error::InvalidField { field: field.into(), value: value.to_string(), allowed: allowed.into() }
    }
    pub fn overflow(what: impl Into<String>) -> Self {
        Error::Overflow { what: what.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidField { field, value, allowed } => {
                write!(f, "invalid {field}={value}: allowed {allowed}")
            }
            Error::Overflow { what } => write!(f, "{what} overflows 64 bits: the input is absurdly large"),
            Error::Decode { message } => write!(f, "{}", message.replace('\n', " ")),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// Overflow-safe arithmetic on u64 that turns overflow into a named [`Error`].
pub trait Checked: Sized {
    fn mul_or(self, rhs: Self, what: &str) -> Result<Self>;
    fn add_or(self, rhs: Self, what: &str) -> Result<Self>;
}

impl Checked for u64 {
    #[inline]
    fn mul_or(self, rhs: u64, what: &str) -> Result<u64> {
        self.checked_mul(rhs).ok_or_else(|| Error::overflow(what))
    }
    #[inline]
    fn add_or(self, rhs: u64, what: &str) -> Result<u64> {
        self.checked_add(rhs).ok_or_else(|| Error::overflow(what))
    }
}

/// Sum an iterator of u64 with overflow detection.
pub fn checked_sum<I: IntoIterator<Item = u64>>(items: I, what: &str) -> Result<u64> {
    items.into_iter().try_fold(0u64, |acc, x| acc.add_or(x, what))
}
