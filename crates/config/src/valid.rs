//! The backstop behind the dialects' field checks: every route, traffic policy and JWT rule a resource translates into is checked whole as the proxy decodes it
//! (`model::valid`, which `api`'s `TryFrom` runs on every snapshot), and refused at the place it
//! was written. The field checks say more precisely what is wrong and where; this makes sure
//! that nothing they miss is accepted by `weft check` and then refused by the proxies.
//!
//! Each call is made only for a part that had no error of its own yet, so a problem is reported
//! once.

use crate::diagnostic::Diagnostic;
use crate::doc::Doc;
use model::security::JwtRule;
use model::{HttpRoute, TrafficPolicy};

fn refused(doc: &Doc, field: &str, result: Result<(), String>, errors: &mut Vec<Diagnostic>) {
    if let Err(why) = result {
        errors.push(doc.error(field, format!("a proxy would refuse it: {why}")));
    }
}

/// Routes translated from the rule at `field`. `resolved`: the mesh's services are known, so a
/// route without destinations is one (without them, destinations may be left unresolved).
pub(crate) fn routes(
    doc: &Doc,
    field: &str,
    routes: &[HttpRoute],
    resolved: bool,
    errors: &mut Vec<Diagnostic>,
) {
    for r in routes {
        let checked = if resolved {
            model::valid::route(r)
        } else {
            model::valid::route_values(r)
        };
        if checked.is_err() {
            return refused(doc, field, checked, errors);
        }
    }
}

/// A traffic policy translated from `field`.
pub(crate) fn policy(doc: &Doc, field: &str, p: &TrafficPolicy, errors: &mut Vec<Diagnostic>) {
    refused(doc, field, model::valid::traffic_policy(p), errors);
}

/// A JWT rule translated from `field`.
pub(crate) fn jwt_rule(doc: &Doc, field: &str, j: &JwtRule, errors: &mut Vec<Diagnostic>) {
    refused(doc, field, model::valid::jwt_rule(j), errors);
}

#[cfg(test)]
mod tests;
