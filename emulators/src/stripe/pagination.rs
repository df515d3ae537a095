//! Stripe's lists: `{"object":"list","data":[...],"has_more":..}`, paged with
//! `limit` (1 to 100, default 10) and `starting_after`.

use super::errors::invalid;
use crate::server::Reply;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// `limit` (1 to 100, default 10), as every Stripe list takes it.
pub(super) fn limit(params: &BTreeMap<String, String>) -> Result<usize, Reply> {
    match params.get("limit") {
        None => Ok(10),
        Some(text) => match text.parse::<usize>() {
            Ok(n @ 1..=100) => Ok(n),
            _ => Err(invalid(
                "limit",
                &format!("Invalid limit: must be an integer between 1 and 100 (got {text})"),
            )),
        },
    }
}

/// One page of `items` (each with its id) after `starting_after`, in Stripe's envelope.
pub(super) fn page(
    items: Vec<(String, Value)>,
    params: &BTreeMap<String, String>,
    url: &str,
) -> Reply {
    page_of(items, |v| v.clone(), params, url)
}

/// [`page`], with only the page's items rendered: a listing of a whole
/// account renders a hundred objects a page, not the account's every one.
pub(super) fn page_of<T>(
    items: Vec<(String, T)>,
    render: impl Fn(&T) -> Value,
    params: &BTreeMap<String, String>,
    url: &str,
) -> Reply {
    let limit = match limit(params) {
        Ok(l) => l,
        Err(reply) => return reply,
    };
    let from = match params.get("starting_after") {
        None => 0,
        Some(after) => match items.iter().position(|(id, _)| id == after) {
            Some(at) => at + 1,
            None => {
                return invalid(
                    "starting_after",
                    &format!("No such object: '{after}' (starting_after)"),
                );
            }
        },
    };
    let rest = &items[from.min(items.len())..];
    let data: Vec<Value> = rest.iter().take(limit).map(|(_, v)| render(v)).collect();
    Reply::json(
        200,
        &json!({
            "object": "list",
            "data": data,
            "has_more": rest.len() > limit,
            "url": url,
        }),
    )
}
