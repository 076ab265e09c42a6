//! The trust bundle and root rotation: rotating at once, or without downtime in two steps
//! (prepare, then activate), trusting extra roots, and retiring old ones.

use super::certs::{generate_root, intermediate_for};
use super::store::{parse_certs, to_pem, write_root, write_trusted};
use super::{lock, Authority, Ca, CaError, State};
use rustls_pki_types::CertificateDer;

impl Ca {
    /// The trust bundle proxies verify peers against: the active root first, then every other
    /// trusted root (the previous root during a rotation).
    pub fn bundle(&self) -> Vec<CertificateDer<'static>> {
        let state = lock(&self.state);
        std::iter::once(state.root.cert.clone())
            .chain(state.trusted.iter().cloned())
            .collect()
    }

    /// [`Ca::bundle`] as concatenated PEM blocks.
    pub fn bundle_pem(&self) -> String {
        self.bundle().iter().map(|c| to_pem(c)).collect()
    }

    /// The active root, which signs (directly or through the intermediate) every new leaf.
    pub fn root(&self) -> CertificateDer<'static> {
        lock(&self.state).root.cert.clone()
    }

    /// Starts a root rotation: a new root (and intermediate) signs every leaf from now on, while
    /// the old root stays in the bundle so leaves it signed keep verifying until they are renewed.
    /// Once every proxy holds a new leaf, [`Ca::retire_roots`] drops the old one. A CA kept in a
    /// directory writes the new root and the trusted list there.
    pub fn rotate_root(&self) -> Result<(), CaError> {
        let root = generate_root(&self.config.trust_domain)?;
        let intermediate = intermediate_for(&self.config, &root)?;
        let mut state = lock(&self.state);
        let mut trusted = state.trusted.clone();
        trusted.push(state.root.cert.clone());
        self.sign_with(&mut state, root, intermediate, trusted)
    }

    /// Makes `root` (and `intermediate`) sign from now on, trusting `trusted` besides it:
    /// written to the CA directory first (when there is one), then in force, under the next
    /// generation.
    fn sign_with(
        &self,
        state: &mut State,
        root: Authority,
        intermediate: Option<Authority>,
        trusted: Vec<CertificateDer<'static>>,
    ) -> Result<(), CaError> {
        if let Some(dir) = &self.dir {
            // Trusted list first: a crash between the two writes then trusts one root too many
            // rather than forgetting the old root that live leaves chain to.
            write_trusted(dir, &trusted)?;
            write_root(dir, &root)?;
        }
        state.root = root;
        state.intermediate = intermediate;
        state.trusted = trusted;
        state.generation += 1;
        Ok(())
    }

    /// Step one of a root rotation without downtime: makes the next root and adds it to the
    /// bundle while the current root keeps signing. Once every proxy trusts it (the bundle
    /// travels with snapshots and renewals), [`Ca::activate_root`] switches signing to it.
    /// Returns false when a next root is already prepared.
    pub fn prepare_root(&self) -> Result<bool, CaError> {
        let mut state = lock(&self.state);
        if state.next.is_some() {
            return Ok(false);
        }
        let root = generate_root(&self.config.trust_domain)?;
        let intermediate = intermediate_for(&self.config, &root)?;
        let mut trusted = state.trusted.clone();
        trusted.push(root.cert.clone());
        if let Some(dir) = &self.dir {
            write_trusted(dir, &trusted)?;
        }
        state.trusted = trusted;
        state.next = Some((root, intermediate));
        Ok(true)
    }

    /// Step two: the prepared root signs every leaf from now on; the old root stays trusted
    /// until [`Ca::retire_roots`]. Returns false when nothing was prepared.
    pub fn activate_root(&self) -> Result<bool, CaError> {
        let mut state = lock(&self.state);
        let Some((root, intermediate)) = state.next.take() else {
            return Ok(false);
        };
        let mut trusted: Vec<_> = state
            .trusted
            .iter()
            .filter(|c| **c != root.cert)
            .cloned()
            .collect();
        trusted.push(state.root.cert.clone());
        self.sign_with(&mut state, root, intermediate, trusted)?;
        Ok(true)
    }

    /// Adds a root to the bundle (PEM or DER) without signing with it, e.g. the next root of an
    /// external PKI before the CA switches to it.
    pub fn trust_root(&self, cert: &[u8]) -> Result<(), CaError> {
        let certs = parse_certs(cert).map_err(CaError::BadRoot)?;
        for cert in &certs {
            let (_, parsed) = x509_parser::parse_x509_certificate(cert)
                .map_err(|e| CaError::BadRoot(e.to_string()))?;
            if !parsed.is_ca() {
                return Err(CaError::BadRoot(format!(
                    "{} is not a CA certificate",
                    parsed.subject()
                )));
            }
        }
        let mut state = lock(&self.state);
        let mut trusted = state.trusted.clone();
        for cert in certs {
            if cert != state.root.cert && !trusted.contains(&cert) {
                trusted.push(cert);
            }
        }
        if let Some(dir) = &self.dir {
            write_trusted(dir, &trusted)?;
        }
        state.trusted = trusted;
        Ok(())
    }

    /// Ends a rotation: the bundle holds only the active root (and a prepared next one) again.
    pub fn retire_roots(&self) -> Result<(), CaError> {
        let mut state = lock(&self.state);
        let keep: Vec<_> = state.next.iter().map(|(r, _)| r.cert.clone()).collect();
        if let Some(dir) = &self.dir {
            write_trusted(dir, &keep)?;
        }
        state.trusted = keep;
        Ok(())
    }
}
