//! What the resolvers read from a request's context: who is asking, for whom store reads are
//! made, the commerce layer; and the paging rule their list fields share.

use std::sync::Arc;

use async_graphql::Context;

use super::error::{ApiError, ApiResult};
use crate::auth::{User, Viewer};
use crate::commerce::Commerce;
use crate::connections::budget::ClientAddr;
use crate::store::Reader;

pub fn viewer<'a>(ctx: &'a Context<'_>) -> Option<&'a User> {
    ctx.data_opt::<Viewer>().and_then(Option::as_ref)
}

pub fn require_user<'a>(ctx: &'a Context<'_>) -> ApiResult<&'a User> {
    viewer(ctx).ok_or(ApiError::Unauthenticated)
}

pub fn require_staff<'a>(ctx: &'a Context<'_>) -> ApiResult<&'a User> {
    let user = require_user(ctx)?;
    if user.is_staff() { Ok(user) } else { Err(ApiError::forbidden("this operation needs the staff or admin role")) }
}

/// Whom this request's store reads are for: the viewer, or the anonymous client's address (see
/// [`crate::store::Reader`]). Every transport puts the client's address in the request's data.
pub fn reader(ctx: &Context<'_>) -> Reader {
    match viewer(ctx) {
        Some(_) => Reader::SignedIn,
        None => Reader::Anonymous(ctx.data_opt::<ClientAddr>().map_or(ClientAddr::NOWHERE, |c| c.0)),
    }
}

pub fn commerce<'a>(ctx: &'a Context<'_>) -> &'a Arc<Commerce> {
    ctx.data_unchecked::<Arc<Commerce>>()
}

/// `first` arguments: an explicit null means the default; never negative; capped so that one
/// request cannot ask for everything.
pub fn page_size(first: Option<i32>, default: i32) -> ApiResult<i64> {
    let first = first.unwrap_or(default);
    if first < 0 {
        return Err(ApiError::BadInput("first must not be negative".into()));
    }
    Ok(i64::from(first.min(1000)))
}
