//! One-time tokens: a join token lets one CSR for an identity be signed; every signing answers
//! with a renewal token for the next one, which dies with the leaf it came with.

use super::{lock, Ca, JOIN_TOKEN_BYTES};
use model::Identity;
use rand::RngCore;
use std::collections::HashMap;
use std::time::SystemTime;

/// What a one-time token allows: one CSR for `identity`, until `expires`.
pub(super) struct Token {
    pub(super) identity: Identity,
    /// Renewal tokens die with the leaf they came with (a proxy whose leaf expired joins again);
    /// join tokens after the CA's `join_token_lifetime`.
    pub(super) expires: Option<SystemTime>,
}

impl Ca {
    /// Mints a one-time token that lets one CSR for `identity` be signed, within the CA's
    /// `join_token_lifetime`.
    pub fn join_token(&self, identity: &Identity) -> String {
        let token = random_token();
        let mut tokens = lock(&self.tokens);
        prune_expired(&mut tokens);
        tokens.insert(
            token.clone(),
            Token {
                identity: identity.clone(),
                expires: Some(SystemTime::now() + self.config.join_token_lifetime),
            },
        );
        token
    }
}

pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; JOIN_TOKEN_BYTES];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn prune_expired(tokens: &mut HashMap<String, Token>) {
    let now = SystemTime::now();
    tokens.retain(|_, token| match token.expires {
        Some(expires) => expires > now,
        None => true,
    });
}
