//! What every HTTP route shares: the one error an HTTP refusal is ([`error`]), the layers every
//! request passes ([`body_limit`], [`origins`]; the client's address is `connections::budget`'s),
//! and the operational endpoints ([`ops`]).

pub mod body_limit;
pub mod error;
pub mod ops;
pub mod origins;
