//! Leader election among control-plane replicas on a cluster, as client-go's leaderelection
//! does it with a `coordination.k8s.io` Lease ([`super::LEASE_NAME`] in the control plane's
//! namespace): the holder renews it every third of its duration; another replica takes it over
//! once it has seen the same holder and renew time for a whole lease duration by its own clock
//! (so clocks that disagree do not matter), writing with the resourceVersion it read so that of
//! two replicas taking it at once one wins. Every replica serves proxies; only the leader
//! writes to the cluster (the roots' ConfigMaps, the webhook's caBundle, routes' status).

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Whether this replica leads: cloned into every writer, which skips its writes while not.
#[derive(Clone, Debug)]
pub struct Leader(watch::Receiver<bool>);

impl Leader {
    /// A control plane alone: always the leader.
    pub fn alone() -> Leader {
        Leader(watch::Sender::new(true).subscribe())
    }

    pub fn is_leader(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits until leadership changes; what it is then.
    pub async fn changed(&mut self) -> bool {
        if self.0.changed().await.is_err() {
            // The election ended (shutdown): nothing more will change.
            std::future::pending::<()>().await;
        }
        *self.0.borrow_and_update()
    }
}

/// This replica's name in the Lease: the pod's (`WEFT_POD_NAME`) or HOST-PID.
pub fn identity() -> String {
    std::env::var("WEFT_POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "weft".to_string());
        format!("{host}-{}", std::process::id())
    })
}

/// What this replica last saw of another's holding, and since when (its own clock).
struct Seen {
    holder: String,
    renew: Option<String>,
    since: Instant,
}

/// Starts electing: the Lease `name` in `namespace`, held for `duration`, until `stop` (when a
/// leader lets it go at once, so another takes over without waiting the duration out). The
/// first round is over when this returns: a replica that finds no leader leads from then on.
pub async fn elect(
    client: kube::Client,
    namespace: &str,
    name: &str,
    me: String,
    duration: Duration,
    stop: CancellationToken,
) -> Leader {
    let (tx, rx) = watch::channel(false);
    let api: Api<Lease> = Api::namespaced(client, namespace);
    let name = name.to_string();
    let retry = (duration / 3).max(Duration::from_millis(200));
    let mut election = Election {
        api,
        name,
        me,
        duration,
        seen: None,
        renewed: None,
        tx,
    };
    election.round().await;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(retry) => {}
            }
            election.round().await;
        }
        election.release().await;
    });
    Leader(rx)
}

/// One replica's part in the election.
struct Election {
    api: Api<Lease>,
    name: String,
    me: String,
    duration: Duration,
    seen: Option<Seen>,
    /// When this replica last renewed the Lease.
    renewed: Option<Instant>,
    tx: watch::Sender<bool>,
}

impl Election {
    async fn round(&mut self) {
        let leads = match step(
            &self.api,
            &self.name,
            &self.me,
            self.duration,
            &mut self.seen,
        )
        .await
        {
            Ok(leads) => {
                if leads {
                    self.renewed = Some(Instant::now());
                }
                leads
            }
            Err(e) => {
                tracing::warn!(lease = %self.name, error = %e, "leader election: cannot reach the Lease");
                // A leader that cannot renew steps down before another may take over.
                *self.tx.borrow()
                    && self
                        .renewed
                        .is_some_and(|at| at.elapsed() < self.duration * 2 / 3)
            }
        };
        let was = self.tx.send_replace(leads);
        if was != leads {
            tracing::info!(lease = %self.name, identity = %self.me, leads, "leader election");
        }
    }

    async fn release(&self) {
        if *self.tx.borrow() {
            self.tx.send_replace(false);
            if let Err(e) = release(&self.api, &self.name, &self.me).await {
                tracing::debug!(error = %e, "leader election: release");
            }
        }
    }
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// One round: creates, renews or takes over the Lease; whether this replica holds it after.
async fn step(
    api: &Api<Lease>,
    name: &str,
    me: &str,
    duration: Duration,
    seen: &mut Option<Seen>,
) -> Result<bool, kube::Error> {
    let seconds = i32::try_from(duration.as_secs().max(1)).unwrap_or(i32::MAX);
    let Some(mut lease) = api.get_opt(name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(me.to_string()),
                lease_duration_seconds: Some(seconds),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return written(api.create(&PostParams::default(), &lease).await);
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder == me {
        spec.renew_time = Some(now());
        spec.lease_duration_seconds = Some(seconds);
        return written(api.replace(name, &PostParams::default(), &lease).await);
    }
    let renew = spec
        .renew_time
        .as_ref()
        .and_then(|t| serde_json::to_string(t).ok());
    let same = seen
        .as_ref()
        .is_some_and(|s| s.holder == holder && s.renew == renew);
    if !same {
        *seen = Some(Seen {
            holder: holder.clone(),
            renew,
            since: Instant::now(),
        });
    }
    let held_for = spec.lease_duration_seconds.map_or(duration, |s| {
        Duration::from_secs(u64::try_from(s).unwrap_or(0))
    });
    let expired = holder.is_empty() || seen.as_ref().is_some_and(|s| s.since.elapsed() >= held_for);
    if !expired {
        return Ok(false);
    }
    spec.holder_identity = Some(me.to_string());
    spec.lease_duration_seconds = Some(seconds);
    spec.acquire_time = Some(now());
    spec.renew_time = Some(now());
    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    written(api.replace(name, &PostParams::default(), &lease).await)
}

/// Whether a write of the Lease made this replica its holder: a conflict (another replica
/// wrote it first) means not.
fn written(result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Lets the Lease go (its holder emptied), if this replica still holds it.
async fn release(api: &Api<Lease>, name: &str, me: &str) -> Result<(), kube::Error> {
    let Some(mut lease) = api.get_opt(name).await? else {
        return Ok(());
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.holder_identity.as_deref() != Some(me) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.renew_time = Some(now());
    api.replace(name, &PostParams::default(), &lease).await?;
    Ok(())
}
